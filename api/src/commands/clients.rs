//! Client creation and the first-admin bootstrap, each recorded as a
//! `ClientCreated` event in the transaction that inserts the client.

use chrono::{DateTime, SubsecRound, Utc};
use nepxy_ledger::metadata::{Actor, EventMetadata, Source};
use nepxy_ledger::{Client, ClientCommand, ClientError};
use uuid::Uuid;

use crate::auth::{Principal, Role, generate_client_secret, hash_secret};
use crate::error::ApiError;
use crate::request_id;
use crate::store::clients::{self, NewClient};
use crate::store::{Store, UnitOfWork};

/// Actor recorded for the bootstrap, whose caller is only known to hold
/// BOOTSTRAP_ADMIN_SECRET.
const BOOTSTRAP_ACTOR: &str = "bootstrap";

/// A created client with its secret, which is returned once and never stored.
pub struct CreatedClient {
    pub client_id: Uuid,
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

/// Metadata of an event caused by an admin or operator action or by the
/// service itself (`actor` is `None` then).
pub fn action_metadata(
    actor: Option<Actor>,
    source: Source,
    reason: Option<String>,
) -> EventMetadata {
    EventMetadata {
        request_id: request_id::current(),
        actor,
        source,
        idempotency_key: None,
        webhook_id: None,
        reason,
        recorded_at: Utc::now().trunc_subsecs(6),
    }
}

pub fn actor_of(principal: &Principal) -> Actor {
    Actor {
        subject: principal.client_id.to_string(),
        role: principal.role.to_string(),
    }
}

/// Appends the events of `command` to the client's aggregate inside `unit`,
/// after taking the aggregate's write lock.
pub async fn record(
    unit: &mut UnitOfWork,
    client_id: Uuid,
    command: ClientCommand,
    metadata: &EventMetadata,
) -> Result<(), ApiError> {
    let id = client_id.to_string();
    let mut client = unit.lock_and_load::<Client>(&id).await?;
    let events = client.aggregate.decide(command)?;
    unit.append(&mut client, events, metadata).await?;
    Ok(())
}

/// Creates a client on behalf of an admin.
pub async fn create(
    store: &Store,
    principal: &Principal,
    name: &str,
    role: Role,
    reason: Option<String>,
) -> Result<CreatedClient, ApiError> {
    let client_id = Uuid::new_v4();
    let secret = generate_client_secret();
    let mut unit = store.begin().await?;
    let created_at = clients::insert(
        unit.connection().await?,
        &NewClient {
            client_id,
            name,
            role,
            secret_hash: &hash_secret(&secret),
            created_by: Some(principal.client_id),
        },
    )
    .await?;
    let metadata = action_metadata(Some(actor_of(principal)), Source::Admin, reason);
    record(
        &mut unit,
        client_id,
        ClientCommand::Create {
            client_id,
            name: name.to_owned(),
            role: role.to_string(),
            created_by: Some(principal.client_id),
        },
        &metadata,
    )
    .await?;
    unit.commit().await?;
    Ok(CreatedClient {
        client_id,
        secret,
        created_at,
    })
}

/// Creates the first admin; `None` when an admin already exists.
pub async fn bootstrap(
    store: &Store,
    name: &str,
    reason: Option<String>,
) -> Result<Option<CreatedClient>, ApiError> {
    let client_id = Uuid::new_v4();
    let secret = generate_client_secret();
    let mut unit = store.begin().await?;
    let new_client = NewClient {
        client_id,
        name,
        role: Role::Admin,
        secret_hash: &hash_secret(&secret),
        created_by: None,
    };
    let Some(created_at) =
        clients::insert_first_admin(unit.connection().await?, &new_client).await?
    else {
        return Ok(None);
    };
    let actor = Actor {
        subject: BOOTSTRAP_ACTOR.to_owned(),
        role: BOOTSTRAP_ACTOR.to_owned(),
    };
    let metadata = action_metadata(Some(actor), Source::Admin, reason);
    record(
        &mut unit,
        client_id,
        ClientCommand::Create {
            client_id,
            name: name.to_owned(),
            role: Role::Admin.to_string(),
            created_by: None,
        },
        &metadata,
    )
    .await?;
    unit.commit().await?;
    Ok(Some(CreatedClient {
        client_id,
        secret,
        created_at,
    }))
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        ApiError::Conflict {
            detail: error.to_string(),
        }
    }
}
