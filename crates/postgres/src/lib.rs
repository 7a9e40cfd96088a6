//! pgbaton's adapter to PostgreSQL 15: it carries out what the HA core decided (initdb,
//! configuration files, start/stop/adopt the postmaster, promote, clone, rewind, slots, roles)
//! and reports what the server says about itself. It decides nothing about HA. Binaries run as
//! the `run_as` OS user when the agent runs as root.

mod admin;
mod client;
mod clone;
mod config;
mod controldata;
mod error;
mod history;
mod identify;
mod initdb;
mod logical;
mod lsn;
mod passfile;
mod pgbackrest;
mod postmaster;
mod pubsub;
mod replica_method;
mod run;
mod server_log;
mod spec;
mod status;

pub use admin::{checkpoint, ensure_users, promote, sync_physical_slots, SlotChanges};
pub use client::{connect, connect_database};
pub use clone::{basebackup, basebackup_with, move_aside, rewind, rewind_with, RewindOutcome};
pub use config::{write_config, write_config_with};
pub use controldata::{
    data_dir_state, parse_controldata, ControlData, DataDirState, DbState, PG_MAJOR,
};
pub use error::{PgError, INSTALL_HINT};
pub use history::{
    install_timeline_history, parse_timeline_history, read_timeline_history,
    render_timeline_history, TimelineEnd,
};
pub use identify::{identify_system, Identity};
pub use initdb::initdb;
pub use logical::{
    advance_slot, drop_logical_slots, ensure_logical_slots, feedback_catalog_xmin,
    install_slot_state, logical_slot_positions, oldest_wal_lsn, parse_slot_state, read_slot_state,
    xid_precedes_or_equals, LogicalSlotSpec, SlotPosition, SlotState,
};
pub use lsn::{format_lsn, parse_lsn, slot_name_for};
pub use passfile::PassFile;
pub use pgbackrest::{
    parse_last_backup, BackupRefused, BackupRun, BackupSource, BackupType, LastBackup, PgBackRest,
    RepoCheck, RepoStatus,
};
pub use postmaster::{Postmaster, StopMode};
pub use pubsub::{
    apply as apply_logical_changes, apply_one as apply_logical_change, check_publications,
    compare_subscribed_tables, connect_source, local_columns, plan_publications,
    plan_subscriptions, published_columns, read_publications, read_subscriptions, subscriber_slots,
    subscription_stats, Change, Problem, PublicationNow, SubscriberSlot, SubscriptionNow,
    SubscriptionStats,
};
pub use replica_method::{
    bootstrap_by_command, create_replica, wait_until_promoted, BootstrapCommand, ReplicaContext,
    ReplicaMethod,
};
pub use run::remove_stale_secret_files;
pub use server_log::{parse_line, LogEvent, StreamTrouble, WalLogScanner};
pub use spec::{Credentials, PgSpec, StandbyConfig, Upstream};
pub use status::{query_status, PgStatus, ReplicationRow, SlotRow, WalReceiver};
/// A connection to PostgreSQL (tokio-postgres).
pub use tokio_postgres::Client;
