//! The end-to-end tests: one binary, one module per area, all through the platform's public
//! interfaces (gRPC, HTTP, the command line).
//!
//! Most tests start the platform in-process through [`support::TestApp`]: every service on
//! port 0, on a SQLite file in a temporary directory or on a PostgreSQL database of its own.
//! Tests that kill the platform or stop it with a signal, run `serve`, count on `/metrics` (its
//! counters are one set per process) or check the command line and its log start the real
//! `autodebit` binary through [`support::Process`].

#[macro_use]
mod support;
mod scenario;

mod analytics;
mod auth;
mod authorization_page;
mod bench;
mod billing_modes;
mod charger_callbacks;
mod charger_crash;
mod complaints;
mod contract_notices;
mod contracts_api;
mod dashboard;
mod errors;
mod load_shedding;
mod log_fixture;
mod logs;
mod mock_wechatpay;
mod modifications;
mod notices;
mod notices_crash;
mod partitions;
mod payer_page;
mod readme;
mod reconciliation;
mod refunds;
mod replicas;
mod risk;
mod run_sqlite;
mod scheduler;
mod serve_postgres;
mod settlement;
mod signing;
mod terms;
mod tls;
mod traces;
mod webhooks;
mod wechatpay_complaints;
mod wechatpay_signing;
