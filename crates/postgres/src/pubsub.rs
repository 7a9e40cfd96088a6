//! Declared publications and subscriptions (`logical:` of the dynamic configuration) on
//! PostgreSQL 15: what one database holds now, the statements that make it match the
//! declaration (a plan to show before anything runs), carrying them out, and the checks that
//! find what would break logical replication before it does (tables without a replica
//! identity in a publication that publishes UPDATE or DELETE; sequences that a move between
//! clusters must copy). Objects that are not declared are left alone unless the caller names
//! them for removal (`ctl edit-config --force` says what goes). The HA core decides when.

use std::collections::{BTreeMap, BTreeSet};

use pgbaton_config::{PublicationScope, PublicationSpec, SubscriptionSpec};
use tokio_postgres::Client;

use crate::error::PgError;

/// A publication as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationNow {
    pub all_tables: bool,
    /// Tables added by name, `schema.table`.
    pub tables: BTreeSet<String>,
    /// Schemas added with `TABLES IN SCHEMA`.
    pub schemas: BTreeSet<String>,
    /// insert, update, delete, truncate, in that order.
    pub publish: Vec<String>,
}

/// A subscription of this database as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionNow {
    pub enabled: bool,
    pub conninfo: String,
    pub publications: Vec<String>,
}

/// One statement of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What it does, for the plan shown to the operator ("create publication app_pub").
    pub what: String,
    pub sql: String,
    /// It drops something (only for names the caller asked to remove).
    pub drops: bool,
    /// Run instead when `sql` fails because the publisher already has the subscription's
    /// slot (a permanent slot its cluster keeps): the same subscription using that slot.
    pub if_slot_exists: Option<String>,
}

fn query_error(what: &str) -> impl FnOnce(tokio_postgres::Error) -> PgError + '_ {
    move |source| PgError::Query {
        what: what.to_string(),
        source,
    }
}

/// Every publication of the connected database.
pub async fn read_publications(
    client: &Client,
) -> Result<BTreeMap<String, PublicationNow>, PgError> {
    let what = "reading publications";
    let rows = client
        .query(
            "SELECT pubname::text, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
             FROM pg_publication ORDER BY pubname",
            &[],
        )
        .await
        .map_err(query_error(what))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let name: String = row.get(0);
        let publish = ["insert", "update", "delete", "truncate"]
            .iter()
            .enumerate()
            .filter(|(i, _)| row.get::<_, bool>(i + 2))
            .map(|(_, op)| op.to_string())
            .collect();
        out.insert(
            name,
            PublicationNow {
                all_tables: row.get(1),
                tables: BTreeSet::new(),
                schemas: BTreeSet::new(),
                publish,
            },
        );
    }
    let rows = client
        .query(
            "SELECT p.pubname::text, n.nspname::text || '.' || c.relname::text
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[],
        )
        .await
        .map_err(query_error(what))?;
    for row in rows {
        if let Some(p) = out.get_mut(&row.get::<_, String>(0)) {
            p.tables.insert(row.get(1));
        }
    }
    let rows = client
        .query(
            "SELECT p.pubname::text, n.nspname::text
             FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
             JOIN pg_namespace n ON n.oid = pn.pnnspid",
            &[],
        )
        .await
        .map_err(query_error(what))?;
    for row in rows {
        if let Some(p) = out.get_mut(&row.get::<_, String>(0)) {
            p.schemas.insert(row.get(1));
        }
    }
    Ok(out)
}

/// Every subscription of the connected database.
pub async fn read_subscriptions(
    client: &Client,
) -> Result<BTreeMap<String, SubscriptionNow>, PgError> {
    let rows = client
        .query(
            "SELECT subname::text, subenabled, subconninfo, subpublications::text[]
             FROM pg_subscription
             WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY subname",
            &[],
        )
        .await
        .map_err(query_error("reading subscriptions"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                SubscriptionNow {
                    enabled: row.get(1),
                    conninfo: row.get(2),
                    publications: row.get(3),
                },
            )
        })
        .collect())
}

/// `orders` is `public.orders`: a declared table without a schema is in `public`.
fn qualified(table: &str) -> String {
    if table.contains('.') {
        table.to_string()
    } else {
        format!("public.{table}")
    }
}

/// A string literal (single quotes doubled).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn scope_sql(scope: &PublicationScope) -> String {
    match scope {
        PublicationScope::AllTables => "FOR ALL TABLES".into(),
        PublicationScope::Tables(t) => format!(
            "FOR TABLE {}",
            t.iter()
                .map(|t| qualified(t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        PublicationScope::Schemas(s) => format!("FOR TABLES IN SCHEMA {}", s.join(", ")),
    }
}

/// The statements that make this database's publications what `declared` says (only the
/// publications declared for this database), dropping those in `remove`.
pub fn plan_publications(
    declared: &BTreeMap<String, PublicationSpec>,
    now: &BTreeMap<String, PublicationNow>,
    remove: &BTreeSet<String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, spec) in declared {
        let publish = literal(&spec.publish.join(", "));
        let create = || Change {
            what: format!("create publication {name}"),
            sql: format!(
                "CREATE PUBLICATION {name} {} WITH (publish = {publish})",
                scope_sql(&spec.scope)
            ),
            drops: false,
            if_slot_exists: None,
        };
        let Some(have) = now.get(name) else {
            out.push(create());
            continue;
        };
        let all = spec.scope == PublicationScope::AllTables;
        if all != have.all_tables {
            // FOR ALL TABLES cannot be altered into or out of: drop and create again (the
            // subscribers' slots do not depend on the publication's identity).
            out.push(Change {
                what: format!("recreate publication {name} (all_tables changes)"),
                sql: format!("DROP PUBLICATION {name}"),
                drops: false,
                if_slot_exists: None,
            });
            out.push(create());
            continue;
        }
        match &spec.scope {
            PublicationScope::AllTables => {}
            PublicationScope::Tables(t) => {
                let want: BTreeSet<String> = t.iter().map(|t| qualified(t)).collect();
                if want != have.tables || !have.schemas.is_empty() {
                    out.push(Change {
                        what: format!("set the tables of publication {name}"),
                        sql: format!(
                            "ALTER PUBLICATION {name} SET {}",
                            &scope_sql(&spec.scope)[4..]
                        ),
                        drops: false,
                        if_slot_exists: None,
                    });
                }
            }
            PublicationScope::Schemas(s) => {
                let want: BTreeSet<String> = s.iter().cloned().collect();
                if want != have.schemas || !have.tables.is_empty() {
                    out.push(Change {
                        what: format!("set the schemas of publication {name}"),
                        sql: format!(
                            "ALTER PUBLICATION {name} SET {}",
                            &scope_sql(&spec.scope)[4..]
                        ),
                        drops: false,
                        if_slot_exists: None,
                    });
                }
            }
        }
        if spec.publish != have.publish {
            out.push(Change {
                what: format!("set what publication {name} publishes"),
                sql: format!("ALTER PUBLICATION {name} SET (publish = {publish})"),
                drops: false,
                if_slot_exists: None,
            });
        }
    }
    for name in remove {
        if now.contains_key(name) && !declared.contains_key(name) {
            out.push(Change {
                what: format!("drop publication {name}"),
                sql: format!("DROP PUBLICATION {name}"),
                drops: true,
                if_slot_exists: None,
            });
        }
    }
    out
}

/// The statements that make this database's subscriptions what `declared` says, dropping
/// those in `remove` (which drops their slots on the publisher too).
pub fn plan_subscriptions(
    declared: &BTreeMap<String, SubscriptionSpec>,
    now: &BTreeMap<String, SubscriptionNow>,
    remove: &BTreeSet<String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, spec) in declared {
        let publications = spec.publications.join(", ");
        let Some(have) = now.get(name) else {
            let create = |with_slot: &str| {
                format!(
                    "CREATE SUBSCRIPTION {name} CONNECTION {} PUBLICATION {publications} WITH (copy_data = {}, enabled = {}{with_slot})",
                    literal(&spec.source),
                    spec.copy_data,
                    spec.enabled
                )
            };
            out.push(Change {
                what: format!("create subscription {name}"),
                sql: create(""),
                drops: false,
                if_slot_exists: Some(create(", create_slot = false")),
            });
            continue;
        };
        // Enabled first when it is to be enabled: a refresh needs a running subscription.
        if spec.enabled && !have.enabled {
            out.push(Change {
                what: format!("enable subscription {name}"),
                sql: format!("ALTER SUBSCRIPTION {name} ENABLE"),
                drops: false,
                if_slot_exists: None,
            });
        }
        if have.conninfo != spec.source {
            out.push(Change {
                what: format!("set the source of subscription {name}"),
                sql: format!(
                    "ALTER SUBSCRIPTION {name} CONNECTION {}",
                    literal(&spec.source)
                ),
                drops: false,
                if_slot_exists: None,
            });
        }
        if have.publications != spec.publications {
            // PostgreSQL refreshes (and copies the new tables) only on an enabled
            // subscription; a disabled one is refreshed when it is enabled.
            let with = if spec.enabled {
                format!("refresh = true, copy_data = {}", spec.copy_data)
            } else {
                "refresh = false".to_string()
            };
            out.push(Change {
                what: format!("set the publications of subscription {name}"),
                sql: format!(
                    "ALTER SUBSCRIPTION {name} SET PUBLICATION {publications} WITH ({with})"
                ),
                drops: false,
                if_slot_exists: None,
            });
        }
        if !spec.enabled && have.enabled {
            out.push(Change {
                what: format!("disable subscription {name}"),
                sql: format!("ALTER SUBSCRIPTION {name} DISABLE"),
                drops: false,
                if_slot_exists: None,
            });
        }
    }
    for name in remove {
        if now.contains_key(name) && !declared.contains_key(name) {
            out.push(Change {
                what: format!("drop subscription {name} (and its slot on the publisher)"),
                sql: format!("DROP SUBSCRIPTION {name}"),
                drops: true,
                if_slot_exists: None,
            });
        }
    }
    out
}

/// Carry a plan out, one statement at a time (CREATE SUBSCRIPTION may not run in a
/// transaction block); stops at the first failure, naming the step.
pub async fn apply(client: &Client, plan: &[Change]) -> Result<(), PgError> {
    for change in plan {
        apply_one(client, change).await?;
    }
    Ok(())
}

/// Carry one statement out; a subscription whose slot the publisher already has (its
/// cluster keeps it as a permanent slot) is created on that slot.
pub async fn apply_one(client: &Client, change: &Change) -> Result<(), PgError> {
    let error = |source| PgError::Query {
        what: change.what.clone(),
        source,
    };
    match client.batch_execute(&change.sql).await {
        Ok(()) => Ok(()),
        Err(e) => match &change.if_slot_exists {
            Some(retry) if slot_already_exists(&e) => {
                client.batch_execute(retry).await.map_err(error)
            }
            _ => Err(error(e)),
        },
    }
}

/// CREATE SUBSCRIPTION failed because the publisher has a slot of that name.
fn slot_already_exists(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.message().contains("could not create replication slot")
            && db.message().contains("already exists")
    })
}

/// A `pgoutput` logical slot of the connected (publishing) database that is not a table
/// copy's: a subscriber's, with how far behind it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberSlot {
    pub name: String,
    pub active: bool,
    /// WAL written since what the subscriber confirmed.
    pub lag_bytes: Option<u64>,
    /// The walsender's `replay_lag`.
    pub lag_seconds: Option<f64>,
}

pub async fn subscriber_slots(client: &Client) -> Result<Vec<SubscriberSlot>, PgError> {
    let rows = client
        .query(
            "SELECT s.slot_name::text, s.active,
                    greatest(pg_current_wal_lsn() - s.confirmed_flush_lsn, 0)::int8,
                    extract(epoch FROM r.replay_lag)::float8
             FROM pg_replication_slots s
             LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
             WHERE s.slot_type = 'logical' AND s.plugin = 'pgoutput' AND NOT s.temporary
               AND s.database = current_database() AND s.slot_name !~ '^pg_[0-9]+_sync_'
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_error("reading the subscribers' slots"))?;
    Ok(rows
        .iter()
        .map(|r| SubscriberSlot {
            name: r.get(0),
            active: r.get(1),
            lag_bytes: r.get::<_, Option<i64>>(2).map(|b| b.max(0) as u64),
            lag_seconds: r.get(3),
        })
        .collect())
}

/// A connection to a subscription's publisher, with its libpq connection string (key=value
/// pairs or a URI; several hosts with `target_session_attrs=read-write` find the primary).
/// Passwords come from the string itself (tokio-postgres reads no `.pgpass`).
pub async fn connect_source(
    conninfo: &str,
    timeout: std::time::Duration,
) -> Result<Client, PgError> {
    let mut config: tokio_postgres::Config =
        conninfo.parse().map_err(|e| PgError::UnexpectedResult {
            what: "reading the subscription's connection string".into(),
            detail: format!("{e}"),
        })?;
    config.connect_timeout(timeout);
    if config.get_application_name().is_none() {
        config.application_name("pgbaton");
    }
    crate::client::connect_with(&config, timeout).await
}

/// The columns (name, type) of each table a subscription receives, as the publisher
/// publishes them (`table` is `schema.table`).
pub async fn published_columns(
    source: &Client,
    publications: &[String],
) -> Result<BTreeMap<String, Vec<(String, String)>>, PgError> {
    let rows = source
        .query(
            "SELECT DISTINCT t.schemaname::text || '.' || t.tablename::text, a.attnum,
                    a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_publication_tables t
             JOIN pg_namespace n ON n.nspname = t.schemaname
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attname = ANY (t.attnames)
             WHERE t.pubname = ANY ($1) ORDER BY 1, 2",
            &[&publications],
        )
        .await
        .map_err(query_error("reading the published tables on the publisher"))?;
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push((r.get(2), r.get(3)));
    }
    Ok(out)
}

/// The columns of `tables` (`schema.table`) that exist in the connected database.
pub async fn local_columns(
    client: &Client,
    tables: &[String],
) -> Result<BTreeMap<String, BTreeSet<String>>, PgError> {
    let rows = client
        .query(
            "SELECT n.nspname::text || '.' || c.relname::text, a.attname::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p') AND n.nspname::text || '.' || c.relname::text = ANY ($1)",
            &[&tables],
        )
        .await
        .map_err(query_error("reading the subscribed tables"))?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().insert(r.get(1));
    }
    Ok(out)
}

/// Tables a subscription receives that the subscriber lacks, or lacks columns of: the
/// apply worker stops at the first change to them. Each with the SQL that fixes it.
pub fn compare_subscribed_tables(
    subscription: &str,
    published: &BTreeMap<String, Vec<(String, String)>>,
    local: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for (table, columns) in published {
        match local.get(table) {
            None => out.push(Problem {
                publication: subscription.to_string(),
                table: table.clone(),
                problem: "published but missing on the subscriber: the initial copy and every change to it fail".into(),
                fix: format!(
                    "CREATE TABLE {table} ({}); -- add the publisher's primary key and constraints, then ALTER SUBSCRIPTION {subscription} REFRESH PUBLICATION;",
                    columns
                        .iter()
                        .map(|(c, t)| format!("{c} {t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            Some(have) => {
                let missing: Vec<&(String, String)> =
                    columns.iter().filter(|(c, _)| !have.contains(c)).collect();
                if !missing.is_empty() {
                    out.push(Problem {
                        publication: subscription.to_string(),
                        table: table.clone(),
                        problem: format!(
                            "the subscriber lacks published column(s) {}: applying a change to it fails",
                            missing
                                .iter()
                                .map(|(c, _)| c.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        fix: missing
                            .iter()
                            .map(|(c, t)| format!("ALTER TABLE {table} ADD COLUMN {c} {t};"))
                            .collect::<Vec<_>>()
                            .join(" "),
                    });
                }
            }
        }
    }
    out
}

/// Something that breaks logical replication, found before it does, with the SQL that
/// fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub publication: String,
    pub table: String,
    pub problem: String,
    pub fix: String,
}

/// Tables of declared publications that publish UPDATE or DELETE but have no replica
/// identity (no primary key and `REPLICA IDENTITY DEFAULT`, or `NOTHING`): PostgreSQL
/// refuses UPDATE and DELETE on them once they are published. And sequences owned by
/// published tables: logical replication does not carry them, a move must copy them.
pub async fn check_publications(
    client: &Client,
    declared: &BTreeMap<String, PublicationSpec>,
) -> Result<Vec<Problem>, PgError> {
    let mut out = Vec::new();
    for (name, spec) in declared {
        let rows = client
            .query(
                "SELECT t.schemaname::text || '.' || t.tablename::text, c.relreplident::text,
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                        EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
                 FROM pg_publication_tables t
                 JOIN pg_namespace n ON n.nspname = t.schemaname
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
                 WHERE t.pubname = $1 ORDER BY 1",
                &[name],
            )
            .await
            .map_err(query_error("checking the tables of the publications"))?;
        let changes_rows = spec.publish.iter().any(|o| o == "update" || o == "delete");
        for row in &rows {
            let table: String = row.get(0);
            let ident: String = row.get(1);
            let has_pk: bool = row.get(2);
            let has_index: bool = row.get(3);
            let missing = match ident.as_str() {
                "n" => true,
                "d" => !has_pk,
                "i" => !has_index,
                _ => false,
            };
            if changes_rows && missing {
                out.push(Problem {
                    publication: name.clone(),
                    table: table.clone(),
                    problem: "no replica identity: UPDATE and DELETE on it fail once it is published".into(),
                    fix: format!(
                        "ALTER TABLE {table} ADD PRIMARY KEY (...); -- or: ALTER TABLE {table} REPLICA IDENTITY FULL;"
                    ),
                });
            }
        }
        let sequences = client
            .query(
                "SELECT DISTINCT sn.nspname::text || '.' || s.relname::text
                 FROM pg_publication_tables t
                 JOIN pg_namespace n ON n.nspname = t.schemaname
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
                 JOIN pg_depend d ON d.refobjid = c.oid AND d.deptype IN ('a', 'i')
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 WHERE t.pubname = $1 ORDER BY 1",
                &[name],
            )
            .await
            .map_err(query_error("checking the sequences of the publications"))?;
        for row in &sequences {
            let sequence: String = row.get(0);
            out.push(Problem {
                publication: name.clone(),
                table: sequence.clone(),
                problem: "a sequence of a published table: logical replication does not copy its value".into(),
                fix: format!(
                    "-- on the subscriber, before it takes writes: SELECT setval('{sequence}', <SELECT last_value FROM {sequence} on the publisher>);"
                ),
            });
        }
    }
    Ok(out)
}

/// A subscription's progress and errors (pg_stat_subscription, pg_stat_subscription_stats).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionStats {
    pub name: String,
    pub enabled: bool,
    /// The apply worker runs.
    pub running: bool,
    /// Tables whose initial copy has not finished (pg_subscription_rel not `r`).
    pub tables_syncing: i64,
    /// Received from the publisher but not yet reported back as applied.
    pub unconfirmed_bytes: Option<u64>,
    /// Last position reported back to the publisher.
    pub latest_end_lsn: Option<String>,
    /// Seconds since the last message from the publisher.
    pub last_message_age_s: Option<f64>,
    pub apply_error_count: i64,
    pub sync_error_count: i64,
}

pub async fn subscription_stats(client: &Client) -> Result<Vec<SubscriptionStats>, PgError> {
    let rows = client
        .query(
            "SELECT s.subname::text, s.subenabled, w.pid IS NOT NULL, w.latest_end_lsn::text,
                    extract(epoch FROM now() - w.last_msg_receipt_time)::float8,
                    coalesce(st.apply_error_count, 0), coalesce(st.sync_error_count, 0),
                    (SELECT count(*) FROM pg_subscription_rel r
                     WHERE r.srsubid = s.oid AND r.srsubstate <> 'r'),
                    greatest(w.received_lsn - w.latest_end_lsn, 0)::int8
             FROM pg_subscription s
             LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
             LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
             WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_error("reading pg_stat_subscription"))?;
    Ok(rows
        .iter()
        .map(|r| SubscriptionStats {
            name: r.get(0),
            enabled: r.get(1),
            running: r.get(2),
            latest_end_lsn: r.get(3),
            last_message_age_s: r.get(4),
            apply_error_count: r.get(5),
            sync_error_count: r.get(6),
            tables_syncing: r.get(7),
            unconfirmed_bytes: r.get::<_, Option<i64>>(8).map(|b| b.max(0) as u64),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scope: PublicationScope, publish: &[&str]) -> PublicationSpec {
        PublicationSpec {
            database: "postgres".into(),
            scope,
            publish: publish.iter().map(|s| s.to_string()).collect(),
        }
    }

    const ALL: [&str; 4] = ["insert", "update", "delete", "truncate"];

    #[test]
    fn publications_are_created_altered_and_dropped_only_when_asked() {
        let mut declared = BTreeMap::new();
        declared.insert(
            "a".to_string(),
            spec(
                PublicationScope::Tables(vec!["t1".into(), "s.t2".into()]),
                &ALL,
            ),
        );
        declared.insert(
            "b".to_string(),
            spec(PublicationScope::AllTables, &["insert"]),
        );
        let mut now = BTreeMap::new();
        now.insert(
            "a".to_string(),
            PublicationNow {
                all_tables: false,
                tables: ["public.t1".to_string()].into(),
                schemas: BTreeSet::new(),
                publish: ALL.iter().map(|s| s.to_string()).collect(),
            },
        );
        let stray = PublicationNow {
            all_tables: true,
            tables: BTreeSet::new(),
            schemas: BTreeSet::new(),
            publish: vec![],
        };
        now.insert("old".to_string(), stray.clone());
        now.insert("handmade".to_string(), stray);
        let plan = plan_publications(&declared, &now, &["old".to_string()].into());
        let sql: Vec<&str> = plan.iter().map(|c| c.sql.as_str()).collect();
        assert_eq!(
            sql,
            [
                "ALTER PUBLICATION a SET TABLE public.t1, s.t2",
                "CREATE PUBLICATION b FOR ALL TABLES WITH (publish = 'insert')",
                "DROP PUBLICATION old",
            ]
        );
        assert_eq!(plan.iter().filter(|c| c.drops).count(), 1);
        // Already as declared: nothing to do.
        let mut same = now.clone();
        same.get_mut("a").expect("a").tables.insert("s.t2".into());
        same.insert(
            "b".into(),
            PublicationNow {
                all_tables: true,
                tables: BTreeSet::new(),
                schemas: BTreeSet::new(),
                publish: vec!["insert".into()],
            },
        );
        assert_eq!(
            plan_publications(&declared, &same, &BTreeSet::new()),
            vec![]
        );
    }

    #[test]
    fn subscribed_tables_missing_or_lacking_columns_are_found_with_the_fix() {
        let mut published = BTreeMap::new();
        published.insert(
            "public.t".to_string(),
            vec![
                ("id".to_string(), "integer".to_string()),
                ("v".to_string(), "text".to_string()),
            ],
        );
        published.insert(
            "public.gone".to_string(),
            vec![("id".to_string(), "bigint".to_string())],
        );
        published.insert(
            "public.same".to_string(),
            vec![("id".to_string(), "bigint".to_string())],
        );
        let mut local = BTreeMap::new();
        local.insert(
            "public.t".to_string(),
            BTreeSet::from(["id".to_string(), "extra".to_string()]),
        );
        local.insert(
            "public.same".to_string(),
            BTreeSet::from(["id".to_string(), "more".to_string()]),
        );
        let problems = compare_subscribed_tables("s", &published, &local);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].table, "public.gone");
        assert!(problems[0]
            .fix
            .starts_with("CREATE TABLE public.gone (id bigint);"));
        assert_eq!(problems[1].table, "public.t");
        assert!(problems[1].problem.contains("column(s) v"));
        assert_eq!(problems[1].fix, "ALTER TABLE public.t ADD COLUMN v text;");
    }

    #[test]
    fn subscriptions_follow_source_publications_and_enabled() {
        let mut declared = BTreeMap::new();
        declared.insert(
            "s".to_string(),
            SubscriptionSpec {
                database: "postgres".into(),
                publications: vec!["p".into(), "q".into()],
                source: "host=h user=o'brien".into(),
                copy_data: true,
                enabled: false,
            },
        );
        let plan = plan_subscriptions(&declared, &BTreeMap::new(), &BTreeSet::new());
        assert_eq!(
            plan[0].sql,
            "CREATE SUBSCRIPTION s CONNECTION 'host=h user=o''brien' PUBLICATION p, q WITH (copy_data = true, enabled = false)"
        );
        assert_eq!(
            plan[0].if_slot_exists.as_deref(),
            Some("CREATE SUBSCRIPTION s CONNECTION 'host=h user=o''brien' PUBLICATION p, q WITH (copy_data = true, enabled = false, create_slot = false)"),
            "the publisher's cluster may keep the slot already"
        );
        let mut now = BTreeMap::new();
        now.insert(
            "s".to_string(),
            SubscriptionNow {
                enabled: true,
                conninfo: "host=old".into(),
                publications: vec!["p".into()],
            },
        );
        let sql: Vec<String> = plan_subscriptions(&declared, &now, &BTreeSet::new())
            .into_iter()
            .map(|c| c.sql)
            .collect();
        assert_eq!(
            sql,
            [
                "ALTER SUBSCRIPTION s CONNECTION 'host=h user=o''brien'",
                "ALTER SUBSCRIPTION s SET PUBLICATION p, q WITH (refresh = false)",
                "ALTER SUBSCRIPTION s DISABLE",
            ]
        );
    }
}
