//! The webhook delivery aggregate: one per stored provider delivery, the
//! audit trail of what operators did with it.
//!
//! A replay that applies a report also writes Payout events. This aggregate
//! records every replay, dry runs and replays that change nothing included,
//! so auditors find each operator action in the event history.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookDeliveryCommand {
    RecordReplay(Replay),
}

/// One replay of a stored delivery and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    pub webhook_id: Uuid,
    /// The `webhook_replays` row with the same record.
    pub replay_id: Uuid,
    pub provider: String,
    pub dry_run: bool,
    pub verdict: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookDeliveryEvent {
    DeliveryReplayed(Replay),
}

impl DomainEvent for WebhookDeliveryEvent {
    fn event_type(&self) -> String {
        match self {
            WebhookDeliveryEvent::DeliveryReplayed(_) => "DeliveryReplayed".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookDeliveryError {
    #[error("replay of delivery {command} sent to the aggregate of delivery {aggregate}")]
    WrongDelivery { aggregate: Uuid, command: Uuid },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub webhook_id: Option<Uuid>,
    pub replays: u64,
}

impl WebhookDelivery {
    /// Decides the events of a command without changing the aggregate.
    pub fn decide(
        &self,
        command: WebhookDeliveryCommand,
    ) -> Result<Vec<WebhookDeliveryEvent>, WebhookDeliveryError> {
        let WebhookDeliveryCommand::RecordReplay(replay) = command;
        if let Some(aggregate) = self.webhook_id
            && aggregate != replay.webhook_id
        {
            return Err(WebhookDeliveryError::WrongDelivery {
                aggregate,
                command: replay.webhook_id,
            });
        }
        Ok(vec![WebhookDeliveryEvent::DeliveryReplayed(replay)])
    }
}

impl Aggregate for WebhookDelivery {
    const TYPE: &'static str = "WebhookDelivery";
    type Command = WebhookDeliveryCommand;
    type Event = WebhookDeliveryEvent;
    type Error = WebhookDeliveryError;
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
        let WebhookDeliveryEvent::DeliveryReplayed(replay) = event;
        self.webhook_id = Some(replay.webhook_id);
        self.replays += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(webhook_id: Uuid) -> Replay {
        Replay {
            webhook_id,
            replay_id: Uuid::new_v4(),
            provider: "tmoney".to_owned(),
            dry_run: true,
            verdict: "duplicate".to_owned(),
            detail: None,
        }
    }

    #[test]
    fn every_replay_is_recorded() {
        let webhook_id = Uuid::new_v4();
        let mut delivery = WebhookDelivery::default();
        for expected in 1..=2 {
            let events = delivery
                .decide(WebhookDeliveryCommand::RecordReplay(replay(webhook_id)))
                .expect("replay recorded");
            assert_eq!(events.len(), 1);
            for event in events {
                delivery.apply(event);
            }
            assert_eq!(delivery.replays, expected);
        }
    }

    #[test]
    fn other_delivery_is_rejected() {
        let mut delivery = WebhookDelivery::default();
        delivery.apply(WebhookDeliveryEvent::DeliveryReplayed(replay(
            Uuid::new_v4(),
        )));
        let other = Uuid::new_v4();
        let error = delivery
            .decide(WebhookDeliveryCommand::RecordReplay(replay(other)))
            .expect_err("another delivery's replay");
        assert!(matches!(error, WebhookDeliveryError::WrongDelivery { .. }));
    }
}
