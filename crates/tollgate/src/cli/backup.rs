//! `tollgate backup --to FILE`: a copy of the embedded SQLite database, made with SQLite's
//! online backup, so it is safe while `serve` runs on the same data directory. PostgreSQL
//! is refused: its own tools (`pg_dump`) back it up.

use std::path::Path;

use anyhow::{Context, bail};
use tollgate::config::{Backend, Config};
use tollgate_store::Store;

pub(crate) async fn run(config: &Config, destination: &Path) -> anyhow::Result<()> {
    let database = match config.backend()? {
        Backend::Sqlite(path) => path,
        Backend::Postgres(_) => bail!(
            "tollgate backup copies the embedded SQLite database, but this one is {}: \
             back it up with pg_dump (see the README)",
            config.database_description()
        ),
    };
    let source = database.clone();
    let target = destination.to_owned();
    let backup = tokio::task::spawn_blocking(move || Store::backup_sqlite(&source, &target))
        .await
        .context("the backup thread stopped")?
        .with_context(|| {
            format!(
                "cannot back up {} to {}",
                database.display(),
                destination.display()
            )
        })?;
    println!(
        "backed up {} to {} ({} pages, {} bytes)",
        database.display(),
        backup.destination.display(),
        backup.pages,
        backup.bytes
    );
    Ok(())
}
