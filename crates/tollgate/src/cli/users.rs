//! `tollgate users create --admin`: the first (or another) Console admin, with a password
//! read from standard input, so it never appears in the shell's history or `ps`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use tollgate_service::Tollgate;

use crate::UsersCommand;

pub(crate) async fn run(tollgate: &Tollgate, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Create {
            email,
            name,
            org,
            admin,
            password_stdin,
        } => {
            if !admin {
                anyhow::bail!(
                    "only admins are created here (--admin); invite everyone else from the Console"
                );
            }
            let stdin = std::io::stdin();
            if !password_stdin && !stdin.is_terminal() {
                anyhow::bail!("give the password on standard input with --password-stdin");
            }
            if stdin.is_terminal() {
                eprint!("Password for {email} (shown as you type): ");
                std::io::stderr().flush().ok();
            }
            let mut password = String::new();
            stdin
                .lock()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let organization = tollgate.organization_named(&org).await?;
            let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or("Admin").to_owned());
            let user = tollgate
                .create_console_admin(&organization.id, &email, &name, password)
                .await?;
            println!("{}", user.id);
            eprintln!(
                "{} is an admin of {} and can sign in at /console/sign-in",
                user.email, organization.name
            );
        }
    }
    Ok(())
}
