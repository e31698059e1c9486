"""The official MLflow Python client against our model-registry, as data scientists use it.

Run through scripts/mlflow-compat.sh, which starts the real binary (SQLite and Postgres) and sets
MLFLOW_TRACKING_URI. Every test uses its own experiment or model names.
"""

import concurrent.futures
import os
import uuid

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

URI = os.environ["MLFLOW_TRACKING_URI"]
mlflow.set_tracking_uri(URI)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client():
    return MlflowClient(URI)


def test_tracking_workflow_and_search(client):
    exp_name = unique("tracking")
    exp_id = mlflow.set_experiment(exp_name).experiment_id
    run_ids = []
    for depth in (3, 4, 5):
        with mlflow.start_run(run_name=f"batch-{depth}") as run:
            mlflow.log_params({"max_depth": depth, "eta": 0.05})
            for step in range(3):
                mlflow.log_metric("auc", 0.7 + depth / 100 + step / 1000, step=step)
            mlflow.set_tags({"owner": "alice" if depth != 5 else "bob"})
            run_ids.append(run.info.run_id)
    run = client.get_run(run_ids[1])
    assert run.data.params["max_depth"] == "4"
    assert run.data.metrics["auc"] == pytest.approx(0.742)
    assert run.data.tags["owner"] == "alice"
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_ids[1], "auc")
    assert [m.step for m in history] == [0, 1, 2]

    found = mlflow.search_runs([exp_id], filter_string="params.max_depth = '4' and tags.owner = 'alice'", output_format="list")
    assert [r.info.run_id for r in found] == [run_ids[1]]
    found = client.search_runs([exp_id], filter_string="metrics.auc > 0.745", order_by=["metrics.auc DESC"])
    assert [r.info.run_id for r in found] == [run_ids[2]]
    found = client.search_runs([exp_id], filter_string="attributes.run_name LIKE 'batch%'", order_by=["params.max_depth ASC"])
    assert [r.data.params["max_depth"] for r in found] == ["3", "4", "5"]

    # Pagination: pages do not overlap and cover everything.
    page1 = client.search_runs([exp_id], max_results=2)
    assert len(page1) == 2 and page1.token
    page2 = client.search_runs([exp_id], max_results=2, page_token=page1.token)
    assert len(page2) == 1 and not page2.token
    assert {r.info.run_id for r in page1} | {r.info.run_id for r in page2} == set(run_ids)

    df = mlflow.search_runs(experiment_names=[exp_name])
    assert len(df) == 3

    with pytest.raises(MlflowException) as e:
        client.search_runs([exp_id], filter_string="metrics.auc >>> 1")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_param_values_cannot_change_and_errors_carry_codes(client):
    exp_id = client.create_experiment(unique("errors"))
    with pytest.raises(MlflowException) as e:
        client.create_experiment(client.get_experiment(exp_id).name)
    assert e.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as e:
        client.get_experiment("987654321")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert mlflow.get_experiment_by_name(unique("missing")) is None
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "lr", "0.1")
    with pytest.raises(MlflowException) as e:
        client.log_param(run.info.run_id, "lr", "0.2")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_delete_and_restore(client):
    exp_id = client.create_experiment(unique("lifecycle"))
    run = client.create_run(exp_id)
    client.delete_run(run.info.run_id)
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"
    assert client.search_runs([exp_id]) == []
    client.restore_run(run.info.run_id)
    assert len(client.search_runs([exp_id])) == 1
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    with pytest.raises(MlflowException):
        client.log_metric(run.info.run_id, "x", 1.0)
    client.restore_experiment(exp_id)
    client.log_metric(run.info.run_id, "x", 1.0)


def test_artifacts_files_and_directories(client, tmp_path):
    mlflow.set_experiment(unique("artifacts"))
    src = tmp_path / "src"
    (src / "plots").mkdir(parents=True)
    (src / "report.md").write_text("# Report\n")
    (src / "plots" / "roc.png").write_bytes(bytes(range(256)) * 10)
    (src / "with space.txt").write_text("spaced")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(src))
        mlflow.log_artifact(str(src / "report.md"), artifact_path="extra")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"a": 1}, "config.json")
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == ["config.json", "extra", "notes", "plots", "report.md", "with space.txt"]
    out = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    assert open(os.path.join(out, "plots", "roc.png"), "rb").read() == bytes(range(256)) * 10
    assert open(os.path.join(out, "with space.txt")).read() == "spaced"
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/config.json") == {"a": 1}
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hello.txt") == "hello"


def _xgb_model():
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, random_state=0, n_jobs=1)
    model.fit(x, y)
    return model, x


def test_log_model_register_alias_stage_and_load(client, tmp_path):
    name = unique("loan-xgb")
    mlflow.set_experiment(unique("models"))
    model, x = _xgb_model()
    with mlflow.start_run():
        mlflow.log_metric("auc", 0.9)
        info = mlflow.xgboost.log_model(model, name="model", registered_model_name=name)
    assert str(info.registered_model_version) == "1"
    client.set_registered_model_alias(name, "champion", 1)
    mv = client.get_model_version_by_alias(name, "champion")
    assert mv.version == "1" and "champion" in mv.aliases
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    expected = model.predict(x)
    assert np.array_equal(np.asarray(loaded.predict(x)).ravel(), expected)

    client.transition_model_version_stage(name, 1, "Production")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/Production")
    assert np.array_equal(np.asarray(loaded.predict(x)).ravel(), expected)
    path = mlflow.artifacts.download_artifacts(f"models:/{name}/1", dst_path=str(tmp_path / "m"))
    assert os.path.exists(os.path.join(path, "MLmodel"))

    # A second version, the alias moved, the stage archived.
    with mlflow.start_run():
        info2 = mlflow.xgboost.log_model(model, name="model", registered_model_name=name)
    assert str(info2.registered_model_version) == "2"
    client.set_registered_model_alias(name, "champion", 2)
    assert client.get_model_version_by_alias(name, "champion").version == "2"
    client.transition_model_version_stage(name, 2, "Production", archive_existing_versions=True)
    assert client.get_model_version(name, 1).current_stage == "Archived"
    latest = client.get_latest_versions(name, stages=["Production"])
    assert [v.version for v in latest] == ["2"]

    with pytest.raises(MlflowException) as e:
        client.get_model_version_by_alias(name, "nope")
    assert e.value.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")
    with pytest.raises(MlflowException):
        client.set_registered_model_alias(name, "v3", 1)

    found = client.search_registered_models(filter_string=f"name = '{name}'")
    assert [m.name for m in found] == [name]
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"]


def test_register_from_run_uri_and_registry_edits(client):
    name = unique("from-run")
    mlflow.set_experiment(unique("register"))
    model, _ = _xgb_model()
    with mlflow.start_run() as run:
        mlflow.xgboost.log_model(model, name="model")
    mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    assert mv.version == "1"
    client.update_registered_model(name, description="loan default model")
    client.set_registered_model_tag(name, "team", "risk")
    client.update_model_version(name, 1, description="first")
    client.set_model_version_tag(name, 1, "validated", "yes")
    m = client.get_registered_model(name)
    assert m.description == "loan default model" and m.tags["team"] == "risk"
    assert client.get_model_version(name, 1).tags["validated"] == "yes"
    renamed = name + "-renamed"
    client.rename_registered_model(name, renamed)
    assert client.get_model_version(renamed, 1).description == "first"
    client.delete_model_version(renamed, 1)
    client.delete_registered_model(renamed)
    with pytest.raises(MlflowException) as e:
        client.get_registered_model(renamed)
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_concurrent_registrations_get_distinct_consecutive_versions(client):
    name = unique("concurrent")
    client.create_registered_model(name)
    exp_id = client.create_experiment(unique("concurrent"))
    run = client.create_run(exp_id)
    source = f"runs:/{run.info.run_id}/model"

    def register(_):
        return int(client.create_model_version(name, source, run_id=run.info.run_id).version)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        versions = sorted(pool.map(register, range(24)))
    assert versions == list(range(1, 25))


def test_webhooks_through_the_client_and_signed_alias_events(client):
    """MLflow 3's webhook API with the client's own calls, and an alias move delivered to a
    receiver that checks the signature as MLflow documents it."""
    import base64
    import hashlib
    import hmac
    import http.server
    import json
    import threading
    import time

    from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent, WebhookStatus

    got = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            got.append((dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        alias_events = [
            WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.CREATED),
            WebhookEvent(WebhookEntity.MODEL_VERSION_ALIAS, WebhookAction.DELETED),
        ]
        hook = client.create_webhook(
            name=unique("hook"),
            url=f"http://127.0.0.1:{server.server_port}/hook",
            events=alias_events,
            secret="compat-secret",
        )
        assert hook.secret is None
        assert hook.status == WebhookStatus.ACTIVE
        assert client.get_webhook(hook.webhook_id).events == alias_events
        assert hook.webhook_id in {w.webhook_id for w in client.list_webhooks(max_results=1000)}
        with pytest.raises(MlflowException, match="Webhook with ID nonexistent not found"):
            client.get_webhook("nonexistent")
        with pytest.raises(MlflowException, match="Invalid webhook URL scheme"):
            client.update_webhook(webhook_id=hook.webhook_id, url="ftp://example.com")

        name = unique("hooked")
        client.create_registered_model(name)
        run = client.create_run(client.create_experiment(unique("hooks")))
        v = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias(name, "champion", v.version)
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.05)
        assert got, "the alias move never reached the webhook"
        headers, body = got[0]
        headers = {k.lower(): val for k, val in headers.items()}
        signed = f"{headers['x-mlflow-delivery-id']}.{headers['x-mlflow-timestamp']}.{body}"
        digest = hmac.new(b"compat-secret", signed.encode(), hashlib.sha256).digest()
        assert headers["x-mlflow-signature"] == "v1," + base64.b64encode(digest).decode()
        payload = json.loads(body)
        assert (payload["entity"], payload["action"]) == ("model_version_alias", "created")
        assert payload["data"] == {"name": name, "alias": "champion", "version": v.version}

        updated = client.update_webhook(webhook_id=hook.webhook_id, status=WebhookStatus.DISABLED)
        assert updated.status == WebhookStatus.DISABLED
        assert updated.last_updated_timestamp > hook.last_updated_timestamp
        assert client.test_webhook(hook.webhook_id).success
    finally:
        client.delete_webhook(hook.webhook_id)
        server.shutdown()


STORE_URI = os.environ.get("COMPAT_BACKEND_STORE_URI", "")


@pytest.mark.skipif(
    not STORE_URI.startswith("sqlite:"),
    reason="MLflow's own store is opened on the SQLite file (this venv has no PostgreSQL driver)",
)
def test_mlflows_own_store_on_the_servers_database(client):
    # MLflow's own suites do this: MlflowClient on the server's database file, writing with
    # MLflow's SQLAlchemy store while the server runs. The server must then serve what it wrote,
    # and number its next version after it.
    name = unique("from-mlflow-store")
    store_client = MlflowClient(STORE_URI)
    store_client.create_registered_model(name)
    written = store_client.create_model_version(name, "mlflow-artifacts:/x/model", "run-1")
    assert written.version in (1, "1")

    served = client.get_model_version(name, "1")
    assert served.source == "mlflow-artifacts:/x/model"
    assert served.run_id == "run-1"
    assert served.description in (None, "")
    assert client.get_registered_model(name).name == name
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]

    nxt = client.create_model_version(name, "mlflow-artifacts:/x/model2", "run-2")
    assert str(nxt.version) == "2"
    # And MLflow's store reads what the server wrote.
    assert store_client.get_model_version(name, "2").source == "mlflow-artifacts:/x/model2"
