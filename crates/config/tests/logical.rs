//! `logical:` in the dynamic configuration: declared publications and subscriptions, read,
//! validated with the key in every error, and written back to the DCS unchanged.

use pgbaton_config::{DynamicConfig, PublicationScope};
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<DynamicConfig, String> {
    DynamicConfig::from_dcs_json(&v, &DynamicConfig::defaults())
        .map(|l| l.value)
        .map_err(|e| e.to_string())
}

#[test]
fn publications_and_subscriptions_are_read_and_round_trip() {
    let doc = json!({"logical": {
        "publications": {
            "app_pub": {"database": "postgres", "all_tables": true},
            "orders_pub": {"database": "shop", "tables": ["orders", "public.lines"],
                           "publish": ["update", "insert"]},
            "audit_pub": {"database": "shop", "schemas": ["audit"]}
        },
        "subscriptions": {
            "app_sub": {"database": "postgres", "publication": "app_pub",
                        "source": "host=10.0.0.5 port=5432 user=replicator dbname=postgres"},
            "two_sub": {"database": "shop", "publications": ["a", "b"],
                        "source": "postgresql://u@h/shop", "copy_data": false, "enabled": false}
        }
    }});
    let c = parse(doc).expect("valid");
    let pubs = &c.logical.publications;
    assert_eq!(pubs["app_pub"].scope, PublicationScope::AllTables);
    assert_eq!(
        pubs["app_pub"].publish,
        ["insert", "update", "delete", "truncate"]
    );
    assert_eq!(
        pubs["orders_pub"].scope,
        PublicationScope::Tables(vec!["orders".into(), "public.lines".into()])
    );
    assert_eq!(
        pubs["orders_pub"].publish,
        ["insert", "update"],
        "PostgreSQL's order"
    );
    assert_eq!(
        pubs["audit_pub"].scope,
        PublicationScope::Schemas(vec!["audit".into()])
    );
    let subs = &c.logical.subscriptions;
    assert_eq!(subs["app_sub"].publications, ["app_pub"]);
    assert!(subs["app_sub"].copy_data && subs["app_sub"].enabled);
    assert_eq!(subs["two_sub"].publications, ["a", "b"]);
    assert!(!subs["two_sub"].copy_data && !subs["two_sub"].enabled);

    let written = c.to_dcs_json();
    let again = parse(written).expect("our own JSON is valid");
    assert_eq!(again.logical, c.logical);
    // Absent: nothing written.
    let plain = DynamicConfig::defaults().to_dcs_json();
    assert!(plain.get("logical").is_none());
}

#[test]
fn the_drop_list_round_trips_and_is_checked() {
    let doc = json!({"logical": {
        "publications": {"app_pub": {"database": "postgres", "all_tables": true}},
        "drop": {"publications": {"old_pub": "shop"}, "subscriptions": {"old_sub": "postgres"}}
    }});
    let parsed = DynamicConfig::from_dcs_json(&doc, &DynamicConfig::defaults()).expect("valid");
    assert!(
        parsed.warnings.is_empty(),
        "the leader applies `logical:` now: no warning, got {:?}",
        parsed.warnings
    );
    let c = parsed.value;
    assert_eq!(c.logical.drop_publications["old_pub"], "shop");
    assert_eq!(c.logical.drop_subscriptions["old_sub"], "postgres");
    assert_eq!(c.logical.databases(), ["postgres", "shop"]);
    let again = parse(c.to_dcs_json()).expect("our own JSON is valid");
    assert_eq!(again.logical, c.logical);

    for (drop, needle) in [
        (
            json!({"publications": {"Old": "d"}}),
            "invalid publication name",
        ),
        (
            json!({"publications": {"old": ""}}),
            "logical.drop.publications.old",
        ),
        (json!({"slots": {}}), "logical.drop.slots"),
    ] {
        let e = parse(json!({"logical": {"drop": drop}})).expect_err("invalid");
        assert!(e.contains(needle), "{needle:?} in {e}");
    }
}

#[test]
fn bad_declarations_are_refused_naming_the_key_and_the_fix() {
    for (doc, needles) in [
        (
            json!({"publications": {"p": {"all_tables": true}}}),
            vec!["logical.publications.p.database", "missing"],
        ),
        (
            json!({"publications": {"p": {"database": "d"}}}),
            vec!["logical.publications.p", "exactly one of all_tables"],
        ),
        (
            json!({"publications": {"p": {"database": "d", "all_tables": true, "tables": ["t"]}}}),
            vec!["exactly one of"],
        ),
        (
            json!({"publications": {"P-1": {"database": "d", "all_tables": true}}}),
            vec!["invalid publication name \"P-1\""],
        ),
        (
            json!({"publications": {"p": {"database": "d", "tables": ["a.b.c"]}}}),
            vec!["schema.table"],
        ),
        (
            json!({"publications": {"p": {"database": "d", "all_tables": true, "publish": ["upsert"]}}}),
            vec!["logical.publications.p.publish", "\"upsert\""],
        ),
        (
            json!({"subscriptions": {"s": {"database": "d", "source": "host=x"}}}),
            vec!["logical.subscriptions.s", "publication: NAME"],
        ),
        (
            json!({"subscriptions": {"s": {"database": "d", "publication": "p"}}}),
            vec!["logical.subscriptions.s.source", "missing"],
        ),
        (
            json!({"subscriptions": {"s": {"database": "d", "publication": "p", "source": "db1"}}}),
            vec!["not a libpq connection string"],
        ),
        (
            json!({"subscriptions": {"s": {"database": "d", "publication": "p", "source": "host=x", "slot": "y"}}}),
            vec!["logical.subscriptions.s.slot", "unknown key"],
        ),
        (
            json!({"publication": {}}),
            vec!["logical.publication", "unknown key"],
        ),
    ] {
        let e = parse(json!({ "logical": doc })).expect_err("invalid");
        for needle in needles {
            assert!(e.contains(needle), "{needle:?} in {e}");
        }
    }
}
