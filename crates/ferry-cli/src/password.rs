//! `ferry hash-password`: an argon2id hash for `[[users]]` in ferry.toml. On a terminal the
//! password is read without echo and asked twice; piped in, it is read as is.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;

/// Shown after `ferry hash-password --help`.
pub const HASH_PASSWORD_HELP: &str =
    "On a terminal the password is asked twice and never shown; piped in
(`printf %s \"$PW\" | ferry hash-password`) it is read from standard input, one final
newline removed. Prints the hash alone on stdout.

Exit codes:
  0    printed the hash
  2    an empty password, or the two entries differ";

fn usage(message: &str, hint: &str) -> ExitCode {
    eprintln!("error: USAGE: {message}");
    eprintln!("hint: {hint}");
    ExitCode::from(crate::exit::USAGE)
}

/// `ferry hash-password`.
pub fn hash_password() -> anyhow::Result<ExitCode> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ").context("reading the password")?;
        if first.is_empty() {
            return Ok(usage("empty password", "type one, or pipe it in"));
        }
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        if again != first {
            return Ok(usage(
                "the two entries differ",
                "run it again and type the same password twice",
            ));
        }
        first
    } else {
        let mut text = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut text)
            .context("reading the password")?;
        let trimmed = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text)
            .to_string();
        if trimmed.is_empty() {
            return Ok(usage(
                "empty password",
                "pipe one in: printf %s 'secret' | ferry hash-password",
            ));
        }
        trimmed
    };
    let hash = ferry_hub::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}
