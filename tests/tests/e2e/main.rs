//! End-to-end tests, compiled into one binary so that the suite links the
//! server and its dependencies once instead of once per file. Each module
//! covers one area; `cargo test -p nepxy-tests --test e2e <module>::` runs one.

mod audit;
mod auth;
mod auth_refresh;
mod catchup;
mod concurrency;
mod controls;
mod deployment;
mod dispatch;
mod event_store;
mod faults;
mod fuzz_corpus;
mod idempotency;
mod migrations;
mod notifications;
mod payouts;
mod projections;
mod rate_limits;
mod rebuild;
mod replay_cli;
mod restore_drill;
mod sandbox;
mod scenario;
mod smoke;
mod tamper;
mod validation;
mod webhook_retries;
mod webhook_smoke;
mod webhooks_bytes;
mod webhooks_operators;
mod webhooks_providers;
mod webhooks_security;
