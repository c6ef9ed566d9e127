//! The Nepxy ledger's HTTP service.
//!
//! - [`app`] builds the axum router and runs the server;
//! - [`routes`] holds thin handlers that parse, authorize and call one
//!   command or query;
//! - [`commands`] runs payouts and deposits through the event store under an
//!   idempotency record;
//! - [`store`] is the PostgreSQL persistence: events, clients, idempotency;
//! - [`dispatch`] sends accepted payouts to [`providers`] and polls them;
//! - [`webhooks`] verifies, stores and applies provider webhooks;
//! - [`notifications`] sends clients signed notifications of final payout
//!   statuses;
//! - [`error`] maps every failure to an RFC 9457 problem in one place.

pub mod app;
pub mod auth;
pub mod commands;
pub mod config;
pub mod controls;
pub mod cursor;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod history;
pub mod input;
pub mod notifications;
pub mod openapi;
pub mod prometheus;
pub mod providers;
pub mod request_id;
pub mod revocation;
pub mod routes;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod webhooks;

pub use app::{connect, migrate, router, serve};
pub use config::Config;
pub use state::AppState;
