//! The client aggregate: one per API client, the audit trail of what admins,
//! operators and the service itself did to the client and its tokens.
//!
//! Events never carry a secret, a token or a hash of either: a revocation
//! names the token id (`jti`) or the refresh token family, never the token.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Set of tokens that a revocation covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationScope {
    /// One access token, by its `jti`.
    AccessToken,
    /// A refresh token family and every access token issued from it.
    Family,
    /// Every token of the client.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientCommand {
    Create {
        client_id: Uuid,
        name: String,
        role: String,
        /// The admin who created the client; `None` for the bootstrap admin.
        created_by: Option<Uuid>,
    },
    RecordRevocation {
        client_id: Uuid,
        scope: RevocationScope,
        jti: Option<String>,
        family_id: Option<Uuid>,
        access_tokens_revoked: i64,
        families_revoked: i64,
    },
    /// A spent refresh token was presented again, so its family was revoked.
    RecordRefreshTokenReuse {
        client_id: Uuid,
        family_id: Uuid,
        access_tokens_revoked: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientEvent {
    ClientCreated {
        client_id: Uuid,
        name: String,
        role: String,
        created_by: Option<Uuid>,
    },
    TokensRevoked {
        client_id: Uuid,
        scope: RevocationScope,
        jti: Option<String>,
        family_id: Option<Uuid>,
        access_tokens_revoked: i64,
        families_revoked: i64,
    },
    RefreshTokenReused {
        client_id: Uuid,
        family_id: Uuid,
        access_tokens_revoked: i64,
    },
}

impl ClientEvent {
    pub fn client_id(&self) -> Uuid {
        match self {
            ClientEvent::ClientCreated { client_id, .. }
            | ClientEvent::TokensRevoked { client_id, .. }
            | ClientEvent::RefreshTokenReused { client_id, .. } => *client_id,
        }
    }
}

impl DomainEvent for ClientEvent {
    fn event_type(&self) -> String {
        let name = match self {
            ClientEvent::ClientCreated { .. } => "ClientCreated",
            ClientEvent::TokensRevoked { .. } => "TokensRevoked",
            ClientEvent::RefreshTokenReused { .. } => "RefreshTokenReused",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("client {0} was already created")]
    AlreadyCreated(Uuid),
    #[error("command for client {command} sent to the aggregate of client {aggregate}")]
    WrongClient { aggregate: Uuid, command: Uuid },
}

/// Clients created before this aggregate existed have no `ClientCreated`
/// event, so revocations are accepted on an aggregate that was never created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: Option<Uuid>,
    pub created: bool,
    pub revocations: u64,
}

impl Client {
    fn check_owner(&self, client_id: Uuid) -> Result<(), ClientError> {
        match self.client_id {
            Some(aggregate) if aggregate != client_id => Err(ClientError::WrongClient {
                aggregate,
                command: client_id,
            }),
            _ => Ok(()),
        }
    }

    /// Decides the events of a command without changing the aggregate.
    pub fn decide(&self, command: ClientCommand) -> Result<Vec<ClientEvent>, ClientError> {
        match command {
            ClientCommand::Create {
                client_id,
                name,
                role,
                created_by,
            } => {
                self.check_owner(client_id)?;
                if self.created {
                    return Err(ClientError::AlreadyCreated(client_id));
                }
                Ok(vec![ClientEvent::ClientCreated {
                    client_id,
                    name,
                    role,
                    created_by,
                }])
            }
            ClientCommand::RecordRevocation {
                client_id,
                scope,
                jti,
                family_id,
                access_tokens_revoked,
                families_revoked,
            } => {
                self.check_owner(client_id)?;
                Ok(vec![ClientEvent::TokensRevoked {
                    client_id,
                    scope,
                    jti,
                    family_id,
                    access_tokens_revoked,
                    families_revoked,
                }])
            }
            ClientCommand::RecordRefreshTokenReuse {
                client_id,
                family_id,
                access_tokens_revoked,
            } => {
                self.check_owner(client_id)?;
                Ok(vec![ClientEvent::RefreshTokenReused {
                    client_id,
                    family_id,
                    access_tokens_revoked,
                }])
            }
        }
    }
}

impl Aggregate for Client {
    const TYPE: &'static str = "Client";
    type Command = ClientCommand;
    type Event = ClientEvent;
    type Error = ClientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.client_id = Some(event.client_id());
        match event {
            ClientEvent::ClientCreated { .. } => self.created = true,
            ClientEvent::TokensRevoked { .. } | ClientEvent::RefreshTokenReused { .. } => {
                self.revocations += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(client_id: Uuid) -> ClientCommand {
        ClientCommand::Create {
            client_id,
            name: "partner".to_owned(),
            role: "client".to_owned(),
            created_by: None,
        }
    }

    #[test]
    fn create_twice_is_rejected() {
        let client_id = Uuid::new_v4();
        let mut client = Client::default();
        for event in client.decide(create(client_id)).expect("first create") {
            client.apply(event);
        }
        assert_eq!(
            client.decide(create(client_id)),
            Err(ClientError::AlreadyCreated(client_id))
        );
    }

    #[test]
    fn revocation_of_another_client_is_rejected() {
        let client_id = Uuid::new_v4();
        let other = Uuid::new_v4();
        let mut client = Client::default();
        for event in client.decide(create(client_id)).expect("create") {
            client.apply(event);
        }
        let result = client.decide(ClientCommand::RecordRevocation {
            client_id: other,
            scope: RevocationScope::Client,
            jti: None,
            family_id: None,
            access_tokens_revoked: 1,
            families_revoked: 1,
        });
        assert_eq!(
            result,
            Err(ClientError::WrongClient {
                aggregate: client_id,
                command: other,
            })
        );
    }

    #[test]
    fn revocation_without_creation_is_recorded() {
        let client_id = Uuid::new_v4();
        let events = Client::default()
            .decide(ClientCommand::RecordRefreshTokenReuse {
                client_id,
                family_id: Uuid::new_v4(),
                access_tokens_revoked: 2,
            })
            .expect("recorded");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type(), "RefreshTokenReused");
    }
}
