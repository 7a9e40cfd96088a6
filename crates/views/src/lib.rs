//! The `pgbaton ctl` views, printed the way `patronictl` 3.0 prints them: the member table
//! (`list`), the replication tree (`topology`), the timeline history (`history`) and the
//! dynamic configuration (`show-config`), and a haproxy.cfg for the cluster (`haproxy-config`).
//!
//! Everything here is a pure function of a [`ClusterState`] read from the DCS, returning the
//! exact text to print (ending with a newline), so the binary only has to read and print.
//! The edits are pure too: [`edit`] turns `edit-config` arguments and text into JSON merge
//! patches and YAML, [`diff`] shows them.

pub mod diff;
pub mod edit;
mod format;
mod haproxy;
mod history;
mod list;
pub mod logical;
mod members;
mod output;
mod pyjson;
mod table;

pub use format::{OutputFormat, ParseFormatError};
pub use haproxy::{render_haproxy, HaproxyPorts};
pub use history::render_history;
pub use list::{render_config, render_list, render_topology, ListOptions};

#[doc(no_inline)]
pub use pgbaton_dcs::ClusterState;
