//! `loanctl registry …`: tools for running the model registry.

use std::io::{BufRead, IsTerminal};

/// Print an argon2id hash of a password, for the registry's users file.
#[derive(clap::Args, Debug)]
pub struct HashPasswordArgs {
    /// Print a whole users-file line, `USER:<hash>`, instead of the hash alone.
    #[arg(long)]
    pub user: Option<String>,
}

/// Reads the password from the terminal (twice, not echoed) or from the first line of standard
/// input, never from the command line, where it would stay in the shell's history and in `ps`.
pub fn hash_password(args: HashPasswordArgs) -> anyhow::Result<()> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let again = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    let hash = model_registry::auth::hash_password(&password)?;
    match args.user {
        Some(user) => {
            anyhow::ensure!(
                !user.is_empty() && !user.contains([':', '\n']),
                "a user name may not be empty or contain ':'"
            );
            println!("{user}:{hash}");
        }
        None => println!("{hash}"),
    }
    Ok(())
}
