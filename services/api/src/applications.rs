//! Loan applications read straight from a JSON request body.
//!
//! A body is never turned into a `serde_json::Value` tree: that costs about 32 bytes per JSON
//! value, so a 16 MiB body of `[0,0,…]` became half a gigabyte. Instead each application's
//! fields land, in the serving spec's order, in small scalars that borrow their text from the
//! body; unknown fields and nested values are skipped without being kept; and a batch stops
//! reading at its limit. What is allocated is bounded by the number of applications times the
//! number of features, whatever the body holds.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use features::{FieldError, Raw, Spec};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Unknown field names kept per application (the rest are counted).
pub const MAX_UNKNOWN_LISTED: usize = 20;

/// One field's value, as the features library reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'de> {
    Missing,
    Num(f64),
    Text(Cow<'de, str>),
    Bool(bool),
    /// An array or object (skipped without being kept): never a valid feature value.
    Nested,
}

impl Field<'_> {
    pub fn raw(&self) -> Raw<'_> {
        match self {
            Field::Missing => Raw::Missing,
            Field::Num(x) => Raw::Num(*x),
            Field::Text(s) => Raw::Text(s),
            Field::Bool(b) => Raw::Bool(*b),
            Field::Nested => Raw::Nested,
        }
    }
}

/// One application: its feature values in spec order, or what is wrong with its shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Application<'de> {
    Fields {
        values: Vec<Field<'de>>,
        /// The first [`MAX_UNKNOWN_LISTED`] field names that are not features (nor the id
        /// column), cut to 64 characters.
        unknown: Vec<String>,
        /// How many more unknown fields there were.
        more_unknown: usize,
    },
    /// Not a JSON object.
    NotObject,
}

impl Application<'_> {
    /// The values for the features library, or every problem of this application at once.
    pub fn raws(&self, spec: &Spec) -> Result<Vec<Raw<'_>>, Vec<FieldError>> {
        let Application::Fields {
            values,
            unknown,
            more_unknown,
        } = self
        else {
            return Err(vec![FieldError {
                field: String::new(),
                code: "wrong_type",
                message: "each application must be a JSON object".into(),
            }]);
        };
        let raws: Vec<Raw<'_>> = values.iter().map(Field::raw).collect();
        if unknown.is_empty() {
            // Scoring validates the values (every field at once) on its way.
            return Ok(raws);
        }
        let mut errors: Vec<FieldError> = unknown
            .iter()
            .map(|k| FieldError {
                field: k.clone(),
                code: "unknown_field",
                message: "is not a feature of the serving model".into(),
            })
            .collect();
        if *more_unknown > 0 {
            errors.push(FieldError {
                field: String::new(),
                code: "unknown_field",
                message: format!("and {more_unknown} more fields that are not features"),
            });
        }
        // Report bad values along with the unknown fields, so the caller sees every problem.
        if let Err(mut e) = spec.validate(&raws) {
            errors.append(&mut e);
        }
        Err(errors)
    }
}

/// Why a batch body cannot be read.
#[derive(Debug, PartialEq)]
pub enum BodyError {
    /// Not JSON (or nested deeper than serde_json's limit).
    Malformed(String),
    /// Valid JSON, but not `{"applications": [ ... ]}`.
    NotBatch,
    /// More applications than the limit.
    TooMany(usize),
}

/// Reads one application (the body of `POST /v1/predict`).
pub fn read_one<'de>(body: &'de [u8], spec: &Spec) -> Result<Application<'de>, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let app = ApplicationSeed(spec)
        .deserialize(&mut de)
        .and_then(|a| de.end().map(|()| a));
    app.map_err(|e| e.to_string())
}

/// Reads `{"applications": [ ... ]}` (the body of `POST /v1/predict/batch`), stopping at the
/// first application past `max`. Other top-level fields are ignored.
pub fn read_batch<'de>(
    body: &'de [u8],
    spec: &Spec,
    max: usize,
) -> Result<Vec<Application<'de>>, BodyError> {
    let shape = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = BatchSeed {
        spec,
        max,
        shape: &shape,
    };
    let read = seed.deserialize(&mut de).and_then(|a| de.end().map(|()| a));
    match (read, shape.take()) {
        (_, Some(e)) => Err(e),
        (Ok(Some(apps)), None) => Ok(apps),
        (Ok(None), None) => Err(BodyError::NotBatch),
        (Err(e), None) => Err(BodyError::Malformed(e.to_string())),
    }
}

struct BatchSeed<'s> {
    spec: &'s Spec,
    max: usize,
    /// Set when the body is valid so far but has the wrong shape or too many applications
    /// (serde's error type cannot carry that).
    shape: &'s Cell<Option<BodyError>>,
}

impl<'s> BatchSeed<'s> {
    fn refuse<E: de::Error>(&self, why: BodyError) -> E {
        self.shape.set(Some(why));
        E::custom("the body is not a batch")
    }
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = Option<Vec<Application<'de>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = Option<Vec<Application<'de>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("{\"applications\": [ ... ]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut apps = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == "applications" && apps.is_none() {
                apps = Some(map.next_value_seed(ApplicationsSeed {
                    spec: self.spec,
                    max: self.max,
                    shape: self.shape,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(apps)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.refuse(BodyError::NotBatch))
    }
}

struct ApplicationsSeed<'s> {
    spec: &'s Spec,
    max: usize,
    shape: &'s Cell<Option<BodyError>>,
}

impl<'de> DeserializeSeed<'de> for ApplicationsSeed<'_> {
    type Value = Vec<Application<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl ApplicationsSeed<'_> {
    fn not_a_list<E: de::Error>(&self) -> E {
        self.shape.set(Some(BodyError::NotBatch));
        E::custom("applications is not a list")
    }
}

impl<'de> Visitor<'de> for ApplicationsSeed<'_> {
    type Value = Vec<Application<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of applications")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut apps = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(app) = seq.next_element_seed(ApplicationSeed(self.spec))? {
            if apps.len() == self.max {
                self.shape.set(Some(BodyError::TooMany(self.max)));
                return Err(de::Error::custom("too many applications"));
            }
            apps.push(app);
        }
        Ok(apps)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.not_a_list())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.not_a_list())
    }
}

/// One application; anything but an object is read through and kept as `NotObject`.
struct ApplicationSeed<'s>(&'s Spec);

impl<'de> DeserializeSeed<'de> for ApplicationSeed<'_> {
    type Value = Application<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ApplicationSeed<'_> {
    type Value = Application<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a loan application")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let spec = self.0;
        let mut values = vec![Field::Missing; spec.features.len()];
        let mut unknown = Vec::new();
        let mut more_unknown = 0usize;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(i) = spec.position(&key) {
                values[i] = map.next_value_seed(FieldSeed)?;
                continue;
            }
            map.next_value::<IgnoredAny>()?;
            if spec.id_column.as_deref() == Some(&*key) {
                continue;
            }
            if unknown.len() < MAX_UNKNOWN_LISTED {
                unknown.push(key.chars().take(64).collect());
            } else {
                more_unknown += 1;
            }
        }
        Ok(Application::Fields {
            values,
            unknown,
            more_unknown,
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Application::NotObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Application::NotObject)
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// A feature's value: a scalar, or `Nested` for anything else (read through, not kept).
struct FieldSeed;

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a feature value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Field::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, x: i64) -> Result<Self::Value, E> {
        Ok(Field::Num(x as f64))
    }
    fn visit_u64<E: de::Error>(self, x: u64) -> Result<Self::Value, E> {
        Ok(Field::Num(x as f64))
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Self::Value, E> {
        Ok(Field::Num(x))
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Field::Text(Cow::Owned(s.to_owned())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Missing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Field::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Field::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        test_support::german_spec()
    }

    fn fields(app: &Application<'_>) -> (Vec<Field<'static>>, Vec<String>, usize) {
        match app {
            Application::Fields {
                values,
                unknown,
                more_unknown,
            } => (
                values
                    .iter()
                    .map(|f| match f {
                        Field::Text(s) => Field::Text(Cow::Owned(s.to_string())),
                        Field::Missing => Field::Missing,
                        Field::Num(x) => Field::Num(*x),
                        Field::Bool(b) => Field::Bool(*b),
                        Field::Nested => Field::Nested,
                    })
                    .collect(),
                unknown.clone(),
                *more_unknown,
            ),
            Application::NotObject => panic!("not an object"),
        }
    }

    #[test]
    fn fields_land_in_spec_order_as_scalars() {
        let spec = spec();
        let a = &spec.features[0].name;
        let b = &spec.features[1].name;
        let body = format!(r#"{{"{b}": "x\"y", "{a}": 12.5, "extra": [1, {{"z": 2}}]}}"#);
        let app = read_one(body.as_bytes(), &spec).unwrap();
        let (values, unknown, more) = fields(&app);
        assert_eq!(values[0], Field::Num(12.5));
        assert_eq!(values[1], Field::Text("x\"y".to_string().into()));
        assert!(values[2..].iter().all(|v| *v == Field::Missing));
        assert_eq!(unknown, vec!["extra".to_string()]);
        assert_eq!(more, 0);
        let body = format!(r#"{{"{a}": [1, 2], "{b}": null}}"#);
        let (values, _, _) = fields(&read_one(body.as_bytes(), &spec).unwrap());
        assert_eq!(values[0], Field::Nested);
        assert_eq!(values[1], Field::Missing);
    }

    #[test]
    fn unknown_fields_are_listed_up_to_the_cap_and_counted_after() {
        let spec = spec();
        let keys: Vec<String> = (0..MAX_UNKNOWN_LISTED + 5)
            .map(|i| format!(r#""u{i}": 0"#))
            .collect();
        let body = format!("{{{}}}", keys.join(","));
        let (_, unknown, more) = fields(&read_one(body.as_bytes(), &spec).unwrap());
        assert_eq!(unknown.len(), MAX_UNKNOWN_LISTED);
        assert_eq!(more, 5);
        let errors = read_one(body.as_bytes(), &spec)
            .unwrap()
            .raws(&spec)
            .unwrap_err();
        assert!(errors.iter().any(|e| e.message.contains("5 more")));
    }

    #[test]
    fn a_batch_stops_at_its_limit_and_keeps_its_shape_errors_apart() {
        let spec = spec();
        let apps = read_batch(
            br#"{"applications": [{}, 1, [2], "x"], "note": {}}"#,
            &spec,
            4,
        )
        .unwrap();
        assert_eq!(apps.len(), 4);
        assert!(matches!(apps[0], Application::Fields { .. }));
        assert!(apps[1..].iter().all(|a| *a == Application::NotObject));
        assert_eq!(
            read_batch(br#"{"applications": [{}, {}, {}]}"#, &spec, 2),
            Err(BodyError::TooMany(2))
        );
        for body in [
            &br#"[{}]"#[..],
            br#"{"applications": {}}"#,
            br#"{"applications": 3}"#,
            br#"{}"#,
            br#""x""#,
        ] {
            assert_eq!(read_batch(body, &spec, 10), Err(BodyError::NotBatch));
        }
        for body in [
            &br#"{"applications": [{}"#[..],
            br#"{"applications": []} x"#,
            b"NaN",
        ] {
            assert!(matches!(
                read_batch(body, &spec, 10),
                Err(BodyError::Malformed(_))
            ));
        }
    }
}
