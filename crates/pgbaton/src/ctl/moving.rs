//! `ctl move --to OTHER`: move this cluster's clients online to another cluster.
//!
//! 1. Checks, before anything changes: the other cluster exists and has a leader; every
//!    login role has the same secret there (a pooling router logs in with what its clients
//!    proved); every table can be published for UPDATE and DELETE (a replica identity) and
//!    exists on the other side (`--copy-schema` copies the schema into an empty database).
//! 2. Declared, as an operator would with `edit-config`: a publication of all tables and a
//!    permanent logical slot here, a subscription there (`pgbaton_move_<database>`), so
//!    the move survives a failover on either side while it catches up.
//! 3. Once every table is copied and the lag small, the `move` key (state `holding`) makes
//!    this cluster's routers hold new write transactions and connections at transaction
//!    boundaries and acknowledge (as for a switchover). Then the leader's WAL position is
//!    read, the subscription confirms it, the sequences' values are copied, and the key says
//!    `moved`: the routers route every client to the other cluster's leader and replicas.
//!    If the last changes do not arrive in time, the key is deleted and the clients
//!    continue here.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use pgbaton_dcs::{ClusterPath, ClusterState, EtcdDcs, MoveDoc, MoveState};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use super::ops::Ops;
use super::prompt::confirm;
use super::Target;

/// What `ctl move` was asked.
pub(super) struct Plan {
    pub to: String,
    pub databases: Vec<String>,
    pub user: String,
    pub copy_schema: bool,
    pub catch_up: Duration,
    pub force: bool,
}

/// How long the last changes may take to be confirmed once the routers hold.
const FINAL_SYNC: Duration = Duration::from_secs(30);
/// Lag (bytes) below which the routers are asked to hold.
const SMALL_LAG: i64 = 1 << 20;
const POLL: Duration = Duration::from_millis(100);

/// The publication, slot and subscription of the move of `database`.
pub(crate) fn move_name(database: &str) -> String {
    let safe: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("pgbaton_move_{safe}")
}

/// The leader of `state`: name, host and port.
fn leader_address(state: &ClusterState, scope: &str) -> anyhow::Result<(String, String, u16)> {
    let name = state
        .leader_name()
        .ok_or_else(|| anyhow!("cluster {scope} has no leader now; try again once it has one"))?;
    let (host, port) = state
        .members
        .get(name)
        .and_then(|m| m.host_port())
        .ok_or_else(|| anyhow!("the leader {name} of {scope} publishes no conn_url"))?;
    Ok((name.to_string(), host, port))
}

/// A libpq connection string reaching whichever member of `state` is the primary.
fn every_member(state: &ClusterState, user: &str, password: Option<&str>, db: &str) -> String {
    let (hosts, ports): (Vec<String>, Vec<String>) = state
        .members
        .values()
        .filter_map(|m| m.host_port())
        .map(|(h, p)| (h, p.to_string()))
        .unzip();
    let mut conninfo = format!(
        "host={} port={} user={} dbname={} target_session_attrs=read-write",
        hosts.join(","),
        ports.join(","),
        quote(user),
        quote(db)
    );
    if let Some(password) = password {
        conninfo.push_str(&format!(" password={}", quote(password)));
    }
    conninfo
}

/// A conninfo value, quoted when it must be.
fn quote(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

async fn connect(
    (name, host, port): &(String, String, u16),
    user: &str,
    password: Option<&str>,
    db: &str,
) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(*port)
        .user(user)
        .dbname(db)
        .application_name("pgbaton ctl move")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await.with_context(|| {
        format!("cannot connect to {name} ({host}:{port}) as {user} to database {db} (password from PGPASSWORD)")
    })?;
    tokio::spawn(connection);
    Ok(client)
}

async fn strings(client: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    let rows = client
        .query(sql, &[])
        .await
        .with_context(|| sql.to_string())?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

async fn count(client: &Client, sql: &str, name: &str) -> anyhow::Result<i64> {
    let row = client
        .query_one(sql, &[&name])
        .await
        .with_context(|| sql.to_string())?;
    Ok(row.get(0))
}

/// The roles clients may log in as (replication roles that are not superusers are the
/// members' own).
const LOGIN_ROLES: &str = "SELECT rolname || ' ' || coalesce(rolpassword, '') FROM pg_authid WHERE rolcanlogin AND (rolsuper OR NOT rolreplication) ORDER BY 1";
const TABLES: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1";
const WITHOUT_IDENTITY: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) ORDER BY 1";

impl Ops {
    pub(super) async fn move_to(&self, plan: &Plan) -> anyhow::Result<()> {
        let here = self.scope().to_string();
        let to = plan.to.as_str();
        if to == here {
            bail!("--to names this cluster ({here}): name the cluster the clients move to");
        }
        if let Some(m) = &self.state.moving {
            bail!(
                "a move of {here}'s clients to {} is recorded already (state {:?}); `ctl move --back --to {}` sends them back to {here}",
                m.value.to,
                m.value.state,
                m.value.to
            );
        }
        let other = self.other_cluster(to).await?;
        let password = std::env::var("PGPASSWORD").ok();
        let password = password.as_deref();
        let source = leader_address(&self.state, &here)?;
        let target = leader_address(&other.state, to)?;
        println!(
            "Moving the clients of {here} (leader {}) to {to} (leader {}), databases {}",
            source.0,
            target.0,
            plan.databases.join(", ")
        );

        // 1. Checks.
        let mut sessions = Vec::new();
        for db in &plan.databases {
            let src = connect(&source, &plan.user, password, db).await?;
            let dst = connect(&target, &plan.user, password, db)
                .await
                .with_context(|| {
                    format!("database {db} must exist on {to}: CREATE DATABASE on its leader first")
                })?;
            sessions.push((db.clone(), src, dst));
        }
        let (_, src, dst) = &sessions[0];
        let wal_level: String = src
            .query_one("SELECT current_setting('wal_level')", &[])
            .await?
            .get(0);
        if wal_level != "logical" {
            bail!(
                "wal_level is {wal_level} on {here}; publishing its changes needs logical: `ctl --scope {here} edit-config -p wal_level=logical --force`, then `ctl --scope {here} restart {here} --pending --force`; nothing was changed"
            );
        }
        let (here_roles, there_roles) = (
            strings(src, LOGIN_ROLES).await?,
            strings(dst, LOGIN_ROLES).await?,
        );
        let differ: Vec<&str> = here_roles
            .iter()
            .filter(|r| !there_roles.contains(r))
            .filter_map(|r| r.split(' ').next())
            .collect();
        if !differ.is_empty() {
            bail!(
                "these login roles are missing on {to} or have another password there: {}. The routers log in to {to} with what their clients proved, so the secrets must be the same: copy them (pg_dumpall --roles-only -h {} -p {} | psql -h {} -p {}), then run ctl move again; nothing was changed",
                differ.join(", "), source.1, source.2, target.1, target.2
            );
        }
        let mut schema_to_copy = Vec::new();
        for (db, src, dst) in &sessions {
            let unpublishable = strings(src, WITHOUT_IDENTITY).await?;
            if !unpublishable.is_empty() {
                let fixes: Vec<String> = unpublishable
                    .iter()
                    .map(|t| {
                        format!("  ALTER TABLE {t} REPLICA IDENTITY FULL;  -- or add a primary key")
                    })
                    .collect();
                bail!(
                    "in database {db}, UPDATE and DELETE would fail on {here} once these tables are published, as they have no primary key or replica identity:\n{}\nnothing was changed",
                    fixes.join("\n")
                );
            }
            let here_tables = strings(src, TABLES).await?;
            let there_tables = strings(dst, TABLES).await?;
            let missing: Vec<&String> = here_tables
                .iter()
                .filter(|t| !there_tables.contains(t))
                .collect();
            if missing.is_empty() {
                continue;
            }
            if plan.copy_schema && there_tables.is_empty() {
                schema_to_copy.push(db.clone());
                continue;
            }
            let names: Vec<&str> = missing.iter().map(|t| t.as_str()).collect();
            bail!(
                "database {db} on {to} lacks these tables of {here}: {}. Create them there (pg_dump --schema-only), or pass --copy-schema when that database is empty on {to}; nothing was changed",
                names.join(", ")
            );
        }
        confirm(
            &format!("Move the clients of {here} to {to}?"),
            plan.force,
            "move the clients",
        )?;
        for db in &schema_to_copy {
            copy_schema(&source, &target, &plan.user, db)?;
            println!("Copied the schema of database {db} to {to}");
        }

        // 2. Declared: publications, then the permanent slots (a slot made before its
        //    publication exists cannot decode the changes in between), then subscriptions.
        let names: Vec<(String, String)> = plan
            .databases
            .iter()
            .map(|db| (db.clone(), move_name(db)))
            .collect();
        let mut publications = serde_json::Map::new();
        let mut slots = serde_json::Map::new();
        let mut subscriptions = serde_json::Map::new();
        for (db, name) in &names {
            publications.insert(name.clone(), json!({"database": db, "all_tables": true}));
            slots.insert(
                name.clone(),
                json!({"type": "logical", "database": db, "plugin": "pgoutput"}),
            );
            subscriptions.insert(
                name.clone(),
                json!({
                    "database": db,
                    "publication": name,
                    "source": every_member(&self.state, &plan.user, password, db),
                    "copy_data": true,
                }),
            );
        }
        self.change_config(&json!({"logical": {"publications": publications}}), None)
            .await?;
        wait_for_each(
            &sessions,
            &format!("publication {{}} on {here}"),
            "SELECT count(*) FROM pg_publication WHERE pubname = $1",
        )
        .await?;
        self.change_config(&json!({"slots": slots}), None).await?;
        wait_for_each(
            &sessions,
            &format!("slot {{}} on {here}"),
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
        )
        .await?;
        other
            .change_config(&json!({"logical": {"subscriptions": subscriptions}}), None)
            .await?;
        println!("Declared publications and slots on {here}, subscriptions on {to}: copying");

        // 3. Caught up: every table copied, the lag small.
        let started = Instant::now();
        for (db, src, dst) in &sessions {
            let name = move_name(db);
            let said = std::cell::Cell::new(Instant::now());
            wait_for(
                &format!("{to} to copy database {db} and catch up (ctl --scope {to} logical says how it goes; the declarations stay, run ctl move again to go on)"),
                plan.catch_up,
                || async {
                    let exists = count(dst, "SELECT count(*) FROM pg_subscription WHERE subname = $1", &name).await?;
                    let copying = count(dst, "SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1 AND r.srsubstate <> 'r'", &name).await?;
                    let lag = count(src, "SELECT coalesce((pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, -1) FROM pg_replication_slots WHERE slot_name = $1", &name).await?;
                    if said.get().elapsed() > Duration::from_secs(5) {
                        println!("  {db}: {copying} tables still copying, {lag} bytes behind ({:.0} s)", started.elapsed().as_secs_f64());
                        said.set(Instant::now());
                    }
                    Ok(exists == 1 && copying == 0 && (0..SMALL_LAG).contains(&lag))
                },
            )
            .await?;
        }
        println!(
            "{to} has caught up ({:.1} s)",
            started.elapsed().as_secs_f64()
        );

        // 4. Hold, confirm the last changes, copy the sequences, move.
        let dcs = self.move_key_handle()?;
        let held_at = Instant::now();
        let holding = MoveDoc {
            to: to.to_string(),
            state: MoveState::Holding,
            extra: [("started_at".to_string(), json!(super::prompt::timestamp()))]
                .into_iter()
                .collect(),
        };
        if !dcs.set_move(&holding, None).await? {
            bail!("another move of {here} was recorded meanwhile; nothing more was done");
        }
        let outcome = self.finish_move(&dcs, &sessions, &holding, to).await;
        match outcome {
            Ok(copied) => {
                println!(
                    "Moved: the routers of {here} send every client to {to}; write transactions were held {:.0} ms; sequences copied: {copied}",
                    held_at.elapsed().as_secs_f64() * 1000.0
                );
                for (_, name) in &names {
                    println!("The subscription {name} on {to} still follows {here}: once nothing writes to {here}, remove it with `ctl --scope {to} edit-config -s logical.subscriptions.{name}=null --force` (its slot on {here} goes with it)");
                }
                Ok(())
            }
            Err(e) => {
                let _ = dcs.delete_move().await;
                Err(e.context(format!(
                    "the move was given up: the routers of {here} route to {here} again"
                )))
            }
        }
    }

    /// The routers hold: wait for their acknowledgements, for the subscriptions to confirm
    /// the leader's position, copy the sequences, and record the move as done.
    async fn finish_move(
        &self,
        dcs: &EtcdDcs,
        sessions: &[(String, Client, Client)],
        holding: &MoveDoc,
        to: &str,
    ) -> anyhow::Result<usize> {
        let here = self.scope().to_string();
        let state = super::load(&self.target).await?;
        let revision = state
            .moving
            .as_ref()
            .map(|m| m.mod_revision)
            .ok_or_else(|| anyhow!("the move key written a moment ago is gone"))?;
        let drain = pgbaton_config::DynamicConfig::from_dcs_json(
            &state
                .config
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or(json!({})),
            &pgbaton_config::DynamicConfig::defaults(),
        )
        .map(|c| Duration::from_secs_f64(c.value.switchover_drain_timeout.clamp(0.0, 3600.0)))
        .unwrap_or(Duration::from_secs(5));
        let deadline = Instant::now() + drain + Duration::from_secs(2);
        loop {
            let state = super::load(&self.target).await?;
            let late: Vec<&String> = state
                .routers
                .iter()
                .filter(|(_, r)| r.paused_for != Some(revision))
                .map(|(name, _)| name)
                .collect();
            if state.routers.is_empty() {
                eprintln!("warning: no router is registered for {here}: clients connected to its members directly are not moved");
                break;
            }
            if late.is_empty() {
                let names: Vec<&str> = state.routers.keys().map(String::as_str).collect();
                println!(
                    "Routers holding the write traffic of {here}: {}",
                    names.join(", ")
                );
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = late.iter().map(|n| n.as_str()).collect();
                eprintln!("warning: routers {} did not acknowledge within switchover_drain_timeout; moving anyway", names.join(", "));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let mut copied = 0;
        for (db, src, dst) in sessions {
            let name = move_name(db);
            let position: String = src
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0);
            wait_for(
                &format!("{to} to confirm {here}'s changes up to {position} in database {db}"),
                FINAL_SYNC,
                || async {
                    let row = src
                        .query_one(
                            "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
                            &[&name, &position],
                        )
                        .await?;
                    Ok(row.get::<_, bool>(0))
                },
            )
            .await?;
            let sequences = src
                .query(
                    "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences WHERE last_value IS NOT NULL",
                    &[],
                )
                .await?;
            for row in sequences {
                let (sequence, value): (String, i64) = (row.get(0), row.get(1));
                dst.execute(
                    "SELECT setval($1::text::regclass, $2::bigint)",
                    &[&sequence, &value],
                )
                .await
                .with_context(|| {
                    format!("setting sequence {sequence} to {value} on {to} (database {db})")
                })?;
                copied += 1;
            }
        }
        let moved = MoveDoc {
            state: MoveState::Moved,
            ..holding.clone()
        };
        if !dcs.set_move(&moved, Some(revision)).await? {
            bail!("the move key changed meanwhile (another ctl move --back?)");
        }
        Ok(copied)
    }

    /// `ctl move --back --to OTHER`: the routers route to this cluster again.
    pub(super) async fn move_back(&self, plan: &Plan) -> anyhow::Result<()> {
        let here = self.scope().to_string();
        let Some(m) = &self.state.moving else {
            bail!("no move of {here}'s clients is recorded; nothing to undo");
        };
        if m.value.to != plan.to {
            bail!(
                "the clients of {here} were moved to {}, not {}; say --to {}",
                m.value.to,
                plan.to,
                m.value.to
            );
        }
        confirm(
            &format!(
                "Send the clients of {here} back from {} to {here}?",
                plan.to
            ),
            plan.force,
            "send the clients back",
        )?;
        let dcs = self.move_key_handle()?;
        dcs.delete_move().await?;
        println!(
            "The routers of {here} route to {here} again; what was written on {} since the move stays there",
            plan.to
        );
        Ok(())
    }

    /// A handle on this cluster's keys, to write `move`.
    fn move_key_handle(&self) -> anyhow::Result<EtcdDcs> {
        Ok(EtcdDcs::new(
            self.target.endpoints.clone(),
            self.target.path.clone(),
            "pgbaton-ctl",
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .with_access(&self.target.access)?)
    }

    /// The cluster `scope` under the same namespace, for its configuration and leader.
    async fn other_cluster(&self, scope: &str) -> anyhow::Result<Ops> {
        let target = Target {
            endpoints: self.target.endpoints.clone(),
            path: ClusterPath::new(&self.target.path.namespace, scope),
            access: self.target.access.clone(),
        };
        let state = super::load(&target)
            .await
            .with_context(|| format!("reading cluster {scope}"))?;
        if state.members.is_empty() {
            bail!(
                "there is no cluster {scope} under namespace {}: `ctl --scope {scope} list` shows what runs",
                self.target.path.namespace
            );
        }
        Ok(Ops {
            target,
            state,
            api: self.api.clone(),
        })
    }
}

/// For each database's move name: poll `sql` (`$1`: the name) on the source until it
/// counts one, within a minute; `what` names it, `{}` standing for the name.
async fn wait_for_each(
    sessions: &[(String, Client, Client)],
    what: &str,
    sql: &str,
) -> anyhow::Result<()> {
    for (db, src, _) in sessions {
        let name = move_name(db);
        wait_for(
            &what.replace("{}", &name),
            Duration::from_secs(60),
            || async { Ok(count(src, sql, &name).await? == 1) },
        )
        .await?;
    }
    Ok(())
}

/// Poll `check` until it says true, within `limit`; the error names `what`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("waited {limit:?} for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `pg_dump --schema-only` of `db` on `source` into `db` on `target` (psql, stopping at
/// the first error); the password from PGPASSWORD, as for the rest.
fn copy_schema(
    source: &(String, String, u16),
    target: &(String, String, u16),
    user: &str,
    db: &str,
) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    let dump = Command::new("pg_dump")
        .args(["--schema-only", "--no-publications", "--no-subscriptions"])
        .args([
            "-h",
            &source.1,
            "-p",
            &source.2.to_string(),
            "-U",
            user,
            "-d",
            db,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run pg_dump (postgresql-client) for --copy-schema")?;
    let Some(schema) = dump.stdout else {
        bail!("pg_dump gave no output");
    };
    let restore = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-X"])
        .args([
            "-h",
            &target.1,
            "-p",
            &target.2.to_string(),
            "-U",
            user,
            "-d",
            db,
        ])
        .stdin(schema)
        .output()
        .context("cannot run psql for --copy-schema")?;
    if !restore.status.success() {
        bail!(
            "copying the schema of {db} into {} failed: {}",
            target.0,
            String::from_utf8_lossy(&restore.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_conninfo_values_are_safe() {
        assert_eq!(move_name("postgres"), "pgbaton_move_postgres");
        assert_eq!(move_name("My-App"), "pgbaton_move_my_app");
        assert_eq!(quote("postgres"), "postgres");
        assert_eq!(quote("it's secret"), "'it\\'s secret'");
        assert_eq!(quote(""), "''");
    }
}
