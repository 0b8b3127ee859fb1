//! The registry from the command line: `tollgate-sidecar plans …`, `tenants …`, `keys …`,
//! working on the database directly with the admin API's validation
//! ([`crate::services::registry`]). Each prints its answer as JSON on stdout; a refusal is
//! one line on stderr naming the field, and exit status 1.

pub mod alerts;
pub mod billing;

use std::sync::Arc;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::services::registry::{Registry, RegistryError};
use crate::storage::sql::Database;
use crate::storage::sql::registry::RegistryStore as _;
use crate::system_clock;

/// `tollgate-sidecar plans …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum PlansCommand {
    /// Create or replace a plan: `plans put pro '{"requests_per_minute": 1000, "monthly_quota":
    /// 100000, "overage": "block"}'` (the body of PUT /v1/admin/plans/{name}).
    Put {
        /// The plan's name.
        name: String,
        /// The plan as JSON.
        json: String,
    },
    /// Show a plan.
    Get {
        /// The plan's name.
        name: String,
    },
    /// List the plans.
    List,
}

/// `tollgate-sidecar tenants …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum TenantsCommand {
    /// Create or replace a tenant: `tenants put acme '{"plan": "pro", "billing_anchor_day":
    /// 1}'` (the body of PUT /v1/admin/tenants/{id}); change its plan, suspend
    /// (`"status": "suspended"`) or resume it the same way.
    Put {
        /// The tenant's id.
        id: String,
        /// The tenant as JSON.
        json: String,
    },
    /// Show a tenant, its plan, current period and usage so far.
    Get {
        /// The tenant's id.
        id: String,
    },
    /// List tenants by id.
    List {
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only ids after this (paging: the last id shown).
        #[arg(long, default_value = "")]
        after: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// `tollgate-sidecar keys …`.
#[derive(Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum KeysCommand {
    /// Create an API key for a tenant: the key is printed once and stored nowhere.
    Create {
        /// The tenant's id.
        tenant: String,
        /// Unix seconds after which it stops working.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    /// List a tenant's keys (ids and prefixes, never keys).
    List {
        /// The tenant's id.
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        /// The key's id (`key_…`).
        key_id: String,
    },
    /// Replace a key: a new key now, the old one working `--overlap-seconds` more.
    Rotate {
        /// The key's id.
        key_id: String,
        /// How long the old key keeps working.
        #[arg(long, default_value_t = 0)]
        overlap_seconds: u64,
    },
}

/// A registry command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryCommand {
    /// `plans …`.
    Plans(PlansCommand),
    /// `tenants …`.
    Tenants(TenantsCommand),
    /// `keys …`.
    Keys(KeysCommand),
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_str(text).map_err(|error| format!("invalid JSON: {error}"))
}

fn shown(error: RegistryError) -> String {
    error.to_string()
}

/// Runs `command` on `database`; the JSON to print, or the one-line reason.
pub async fn run(command: RegistryCommand, database: Database) -> Result<Value, String> {
    let registry = Registry::new(Arc::new(database), system_clock);
    match command {
        RegistryCommand::Plans(command) => plans(&registry, command).await,
        RegistryCommand::Tenants(command) => tenants(&registry, command).await,
        RegistryCommand::Keys(command) => keys(&registry, command).await,
    }
}

async fn plans(registry: &Registry<Database>, command: PlansCommand) -> Result<Value, String> {
    match command {
        PlansCommand::Put { name, json } => {
            let (_, plan) = registry
                .put_plan(&name, parse(&json)?)
                .await
                .map_err(shown)?;
            Ok(json!(plan))
        }
        PlansCommand::Get { name } => match registry.store.plan(&name).await {
            Ok(Some(plan)) => Ok(json!(plan)),
            Ok(None) => Err(format!("no plan {name:?}")),
            Err(error) => Err(error.to_string()),
        },
        PlansCommand::List => {
            let plans = registry.store.plans().await.map_err(|e| e.to_string())?;
            Ok(json!({ "plans": plans }))
        }
    }
}

async fn tenants(registry: &Registry<Database>, command: TenantsCommand) -> Result<Value, String> {
    match command {
        TenantsCommand::Put { id, json } => {
            let put = registry
                .put_tenant(&id, parse(&json)?)
                .await
                .map_err(shown)?;
            Ok(put.tenant)
        }
        TenantsCommand::Get { id } => registry.tenant(&id).await.map_err(shown),
        TenantsCommand::List {
            prefix,
            after,
            limit,
        } => registry
            .tenants(&prefix, &after, limit.clamp(1, 1_000))
            .await
            .map_err(shown),
    }
}

async fn keys(registry: &Registry<Database>, command: KeysCommand) -> Result<Value, String> {
    match command {
        KeysCommand::Create { tenant, expires_at } => {
            let (record, key) = registry
                .create_key(&tenant, expires_at)
                .await
                .map_err(shown)?;
            Ok(
                json!({"key_id": record.key_id, "key": key, "prefix": record.prefix,
                      "tenant": record.tenant, "expires_at": record.expires_at}),
            )
        }
        KeysCommand::List { tenant } => registry.keys(&tenant).await.map_err(shown),
        KeysCommand::Revoke { key_id } => {
            registry.revoke_key(&key_id).await.map_err(shown)?;
            Ok(json!({"revoked": key_id}))
        }
        KeysCommand::Rotate {
            key_id,
            overlap_seconds,
        } => {
            let (record, key, until) = registry
                .rotate_key(&key_id, overlap_seconds)
                .await
                .map_err(shown)?;
            Ok(
                json!({"key_id": record.key_id, "key": key, "prefix": record.prefix,
                      "previous_key_id": key_id, "previous_expires_at": until}),
            )
        }
    }
}
