//! The Patroni-style configuration `local up` writes for each member: the one member
//! template (`pgbaton_config::template`) with `local up`'s ports and options. It is the same
//! format `pgbaton agent --config` reads, so it doubles as an example.

use std::path::Path;

use pgbaton_config::template::{ArchiveYaml, MemberYaml, Synchronous};

use super::{Ports, UpArgs};

pub fn member_config(
    args: &UpArgs,
    dir: &Path,
    name: &str,
    k: u16,
    ports: &Ports,
    archive: Option<ArchiveYaml>,
) -> String {
    let mut member = MemberYaml::loopback(
        &args.scope,
        name,
        dir.join(name),
        ports.postgres(k),
        ports.api(k),
        ports.etcd_client,
    );
    member.header = Some(format!(
        "Written by `pgbaton local up`: a Patroni-style configuration for member {name}."
    ));
    member.ttl = args.ttl;
    member.loop_wait = args.loop_wait;
    member.retry_timeout = args.retry_timeout;
    member.synchronous = match args.synchronous.as_str() {
        "on" => Synchronous::On,
        "quorum" => Synchronous::Quorum,
        _ => Synchronous::Off,
    };
    member.synchronous_strict = args.strict;
    member.archive = archive;
    member.standby_of = args.standby_of.clone();
    member.render()
}
