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
                    });
                }
            }
        }
        if spec.publish != have.publish {
            out.push(Change {
                what: format!("set what publication {name} publishes"),
                sql: format!("ALTER PUBLICATION {name} SET (publish = {publish})"),
                drops: false,
            });
        }
    }
    for name in remove {
        if now.contains_key(name) && !declared.contains_key(name) {
            out.push(Change {
                what: format!("drop publication {name}"),
                sql: format!("DROP PUBLICATION {name}"),
                drops: true,
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
            out.push(Change {
                what: format!("create subscription {name}"),
                sql: format!(
                    "CREATE SUBSCRIPTION {name} CONNECTION {} PUBLICATION {publications} WITH (copy_data = {}, enabled = {})",
                    literal(&spec.source),
                    spec.copy_data,
                    spec.enabled
                ),
                drops: false,
            });
            continue;
        };
        // Enabled first when it is to be enabled: a refresh needs a running subscription.
        if spec.enabled && !have.enabled {
            out.push(Change {
                what: format!("enable subscription {name}"),
                sql: format!("ALTER SUBSCRIPTION {name} ENABLE"),
                drops: false,
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
            });
        }
        if !spec.enabled && have.enabled {
            out.push(Change {
                what: format!("disable subscription {name}"),
                sql: format!("ALTER SUBSCRIPTION {name} DISABLE"),
                drops: false,
            });
        }
    }
    for name in remove {
        if now.contains_key(name) && !declared.contains_key(name) {
            out.push(Change {
                what: format!("drop subscription {name} (and its slot on the publisher)"),
                sql: format!("DROP SUBSCRIPTION {name}"),
                drops: true,
            });
        }
    }
    out
}

/// Carry a plan out, one statement at a time (CREATE SUBSCRIPTION may not run in a
/// transaction block); stops at the first failure, naming the step.
pub async fn apply(client: &Client, plan: &[Change]) -> Result<(), PgError> {
    for change in plan {
        client
            .batch_execute(&change.sql)
            .await
            .map_err(|source| PgError::Query {
                what: change.what.clone(),
                source,
            })?;
    }
    Ok(())
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
                    coalesce(st.apply_error_count, 0), coalesce(st.sync_error_count, 0)
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
