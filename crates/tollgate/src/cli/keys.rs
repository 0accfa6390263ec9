//! `tollgate keys …`: create (the secret alone on stdout), list, revoke.

use serde_json::json;
use tollgate_core::keys::KeyKind;
use tollgate_service::{KeyStatus, Tollgate};

use crate::KeysCommand;
use crate::cli::{instant, print_json};

pub(crate) async fn run(tollgate: &Tollgate, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { workspace, org, name } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace = tollgate.workspace_named(&org.id, &workspace).await?;
            let created = tollgate
                .create_key(KeyKind::Api, &org.id, Some(&workspace.id), &name)
                .await?;
            println!("{}", created.secret.expose_secret());
        }
        KeysCommand::List { org, workspace, json } => {
            let org = tollgate.organization_named(&org).await?;
            let workspace_id = match workspace {
                Some(name) => Some(tollgate.workspace_named(&org.id, &name).await?.id),
                None => None,
            };
            let keys = tollgate
                .keys(&org.id, KeyKind::Api, workspace_id.as_deref())
                .await?;
            if json {
                let rows: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|key| {
                        json!({
                            "id": key.id, "name": key.name, "workspace_id": key.workspace_id,
                            "partial_key_hint": key.hint, "status": key.status.as_str(),
                            "created_at": instant(key.created_at), "last_used_at": key.last_used_at.map(instant),
                        })
                    })
                    .collect();
                return print_json(&json!(rows));
            }
            println!(
                "{:<32} {:<10} {:<28} {:<21} NAME",
                "ID", "STATUS", "HINT", "LAST USED"
            );
            for key in keys {
                let last_used = key.last_used_at.map_or("never".to_owned(), instant);
                println!(
                    "{:<32} {:<10} {:<28} {:<21} {}",
                    key.id,
                    key.status.as_str(),
                    key.hint,
                    last_used,
                    key.name
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            tollgate.set_key_status(&key_id, KeyStatus::Archived).await?;
            println!("revoked {key_id}");
        }
    }
    Ok(())
}
