//! The operations (switchover, failover, restart, reload, reinit, pause, flush, edit-config):
//! each checked against the DCS view, then carried out by a member's REST API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use pgbaton_config::DynamicConfig;
use pgbaton_dcs::{ClusterState, Dcs, EtcdDcs};
use pgbaton_views::{ListOptions, OutputFormat};
use serde_json::{json, Value};

use super::api::Api;
use super::args::{flush_words, CtlCommand, FlushTarget};
use super::prompt::{confirm, timestamp};
use super::{table_of, Target};

/// The operations: each goes through a member's REST API.
pub(super) struct Ops {
    pub(super) target: Target,
    pub(super) state: ClusterState,
    pub(super) api: Api,
}

impl Ops {
    pub(super) async fn run(self, command: CtlCommand) -> anyhow::Result<()> {
        match command {
            CtlCommand::Switchover { cancel: true, .. } => self.flush_switchover().await,
            CtlCommand::Switchover {
                leader,
                candidate,
                scheduled,
                force,
                ..
            } => self.switchover(leader, candidate, scheduled, force).await,
            CtlCommand::Flush { words, force } => match flush_words(&words)? {
                (FlushTarget::Switchover, _) => self.flush_switchover().await,
                (FlushTarget::Restart, members) => {
                    let members = self.members_or_all(&members, false)?;
                    self.flush_restart(&members, force).await
                }
            },
            CtlCommand::Failover {
                candidate, force, ..
            } => self.failover(candidate, force).await,
            CtlCommand::Restart {
                members,
                all,
                pending,
                scheduled,
                force,
            } => {
                let members = self.members_or_all(&members, all)?;
                self.restart(&members, pending, scheduled, force).await
            }
            CtlCommand::Reload { members, force } => {
                let members = self.members_or_all(&members, false)?;
                self.reload(&members, force).await
            }
            CtlCommand::Reinit { member, force } => match member.as_slice() {
                [one] => self.reinit(one, force).await,
                _ => anyhow::bail!(
                    "reinit takes one member (or the cluster name and one member), got {}",
                    member.join(" ")
                ),
            },
            CtlCommand::Backup {
                kind,
                from,
                no_wait,
                ..
            } => self.backup(&kind, from.as_deref(), !no_wait).await,
            CtlCommand::Pause { .. } => self.pause(true).await,
            CtlCommand::Resume { .. } => self.pause(false).await,
            CtlCommand::Logical { what, format } => self.logical(what.is_some(), format).await,
            CtlCommand::Move {
                to,
                databases,
                user,
                copy_schema,
                catch_up_timeout,
                back,
                force,
            } => {
                let plan = super::moving::Plan {
                    to,
                    databases,
                    user,
                    copy_schema,
                    catch_up: Duration::from_secs(catch_up_timeout),
                    force,
                };
                if back {
                    self.move_back(&plan).await
                } else {
                    self.move_to(&plan).await
                }
            }
            CtlCommand::EditConfig { set, pg, force, .. } => {
                self.edit_config(&set, &pg, force).await
            }
            CtlCommand::List { .. }
            | CtlCommand::Topology { .. }
            | CtlCommand::History { .. }
            | CtlCommand::ShowConfig { .. }
            | CtlCommand::RouterStatus { .. }
            | CtlCommand::HaproxyConfig { .. } => Ok(()),
        }
    }

    pub(super) fn scope(&self) -> &str {
        &self.target.path.scope
    }

    pub(super) fn api_url(&self, member: &str) -> anyhow::Result<&str> {
        let doc = self.state.members.get(member).ok_or_else(|| {
            let known: Vec<&str> = self.state.members.keys().map(String::as_str).collect();
            anyhow!(
                "{member} is not a member of cluster {} (members: {})",
                self.scope(),
                known.join(", ")
            )
        })?;
        if doc.api_url.is_empty() {
            bail!("{member} publishes no REST API address (api_url)");
        }
        Ok(&doc.api_url)
    }

    fn members_or_all(&self, given: &[String], all: bool) -> anyhow::Result<Vec<String>> {
        if all || given.is_empty() {
            return Ok(self.state.members.keys().cloned().collect());
        }
        for m in given {
            self.api_url(m)?;
        }
        Ok(given.to_vec())
    }

    /// The leader first, then every other member with an API.
    fn api_urls_leader_first(&self) -> Vec<(String, String)> {
        let leader = self.state.leader_name();
        let mut out: Vec<(String, String)> = Vec::new();
        if let Some(l) = leader {
            if let Ok(url) = self.api_url(l) {
                out.push((l.to_string(), url.to_string()));
            }
        }
        for (name, doc) in &self.state.members {
            if Some(name.as_str()) != leader && !doc.api_url.is_empty() {
                out.push((name.clone(), doc.api_url.clone()));
            }
        }
        out
    }

    async fn print_table(&self) {
        match table_of(&self.target).await {
            Ok(table) => print!("{table}"),
            Err(e) => eprintln!("warning: cannot show the member table: {e:#}"),
        }
    }

    async fn switchover(
        &self,
        leader: Option<String>,
        candidate: Option<String>,
        scheduled: Option<String>,
        force: bool,
    ) -> anyhow::Result<()> {
        let Some(current) = self.state.leader_name() else {
            bail!(
                "cluster {} has no leader: use `pgbaton ctl failover --candidate NAME`",
                self.scope()
            );
        };
        if let Some(named) = &leader {
            if named != current {
                bail!(
                    "{named} is not the leader of cluster {}: {current} is",
                    self.scope()
                );
            }
        }
        let scheduled = scheduled.filter(|s| !s.eq_ignore_ascii_case("now"));
        let url = self.api_url(current)?.to_string();
        if !force {
            print!(
                "{}",
                pgbaton_views::render_list(&self.state, self.scope(), &list_options())
            );
            println!(
                "Switchover from {current} to {}{}",
                candidate.as_deref().unwrap_or("the healthiest replica"),
                scheduled
                    .as_deref()
                    .map(|at| format!(" at {at}"))
                    .unwrap_or_default()
            );
        }
        confirm(
            &format!(
                "Are you sure you want to switchover cluster {}, demoting current leader {current}?",
                self.scope()
            ),
            force,
            "switch over",
        )?;
        let body = json!({"leader": current, "candidate": candidate, "scheduled_at": scheduled});
        let answer = self
            .api
            .call(reqwest::Method::POST, &url, "/switchover", Some(&body))
            .await?;
        if !answer.ok() {
            bail!(
                "switchover refused ({}): {}",
                answer.status,
                answer.message()
            );
        }
        println!("{} {}", timestamp(), answer.message());
        self.print_table().await;
        Ok(())
    }

    async fn failover(&self, candidate: Option<String>, force: bool) -> anyhow::Result<()> {
        if let Some(c) = &candidate {
            self.api_url(c)?;
        }
        confirm(
            &format!(
                "Are you sure you want to failover cluster {}{}?",
                self.scope(),
                candidate
                    .as_deref()
                    .map(|c| format!(" to {c}"))
                    .unwrap_or_default()
            ),
            force,
            "fail over",
        )?;
        let body = json!({ "candidate": candidate });
        let mut last = None;
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(reqwest::Method::POST, &url, "/failover", Some(&body))
                .await
            {
                Ok(answer) if answer.ok() => {
                    println!("{} {}", timestamp(), answer.message());
                    self.print_table().await;
                    return Ok(());
                }
                Ok(answer) => bail!(
                    "failover refused by {name} ({}): {}",
                    answer.status,
                    answer.message()
                ),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e.context("no member's REST API answered")),
            None => bail!("no member publishes a REST API address"),
        }
    }

    async fn restart(
        &self,
        members: &[String],
        pending: bool,
        scheduled: Option<String>,
        force: bool,
    ) -> anyhow::Result<()> {
        let scheduled = pgbaton_api::ops::parse_schedule(scheduled.as_deref(), chrono::Utc::now())
            .map_err(|e| anyhow!(e.to_string().replace("switchover", "restart")))?;
        // A scheduled restart checks "pending" when its time comes, not now.
        let members: Vec<&String> = members
            .iter()
            .filter(|m| {
                !pending
                    || scheduled.is_some()
                    || self.state.members.get(*m).and_then(|d| d.pending_restart) == Some(true)
            })
            .collect();
        if members.is_empty() {
            println!("No member needs a restart");
            return Ok(());
        }
        let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
        confirm(
            &format!(
                "Are you sure you want to restart members {}?",
                names.join(", ")
            ),
            force,
            "restart",
        )?;
        let body = json!({ "restart_pending": pending, "schedule": scheduled });
        let mut failed = Vec::new();
        for member in members {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::POST, url, "/restart", Some(&body))
                .await
            {
                Ok(a) if a.ok() && scheduled.is_some() => {
                    println!(
                        "Success: restart scheduled on member {member}: {}",
                        a.message()
                    )
                }
                Ok(a) if a.ok() => println!("Success: restart on member {member}"),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("restart failed on {}", failed.join("; "))
        }
    }

    /// Cancel the pending switchover (`DELETE /switchover` on the leader, else any member).
    async fn flush_switchover(&self) -> anyhow::Result<()> {
        if self.state.failover.is_none() {
            println!("No pending switchover: nothing to cancel");
            return Ok(());
        }
        let mut last = None;
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(reqwest::Method::DELETE, &url, "/switchover", None)
                .await
            {
                Ok(a) if a.ok() => {
                    println!("Success: {}", a.message());
                    return Ok(());
                }
                Ok(a) => bail!(
                    "{name} refused to cancel the switchover ({}): {}",
                    a.status,
                    a.message()
                ),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e.context("no member's REST API answered")),
            None => bail!("no member publishes a REST API address"),
        }
    }

    /// Cancel the scheduled restarts of `members` (`DELETE /restart` on each).
    async fn flush_restart(&self, members: &[String], force: bool) -> anyhow::Result<()> {
        let scheduled: Vec<&String> = members
            .iter()
            .filter(|m| {
                self.state
                    .members
                    .get(*m)
                    .is_some_and(|d| d.extra.contains_key("scheduled_restart"))
            })
            .collect();
        if scheduled.is_empty() {
            println!("No scheduled restart: nothing to cancel");
            return Ok(());
        }
        let names: Vec<&str> = scheduled.iter().map(|m| m.as_str()).collect();
        confirm(
            &format!(
                "Are you sure you want to cancel the scheduled restart of {}?",
                names.join(", ")
            ),
            force,
            "cancel",
        )?;
        let mut failed = Vec::new();
        for member in scheduled {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::DELETE, url, "/restart", None)
                .await
            {
                Ok(a) if a.ok() => println!("Success: flush scheduled restart for member {member}"),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("cancelling failed on {}", failed.join("; "))
        }
    }

    async fn reload(&self, members: &[String], force: bool) -> anyhow::Result<()> {
        confirm(
            &format!(
                "Are you sure you want to reload members {}?",
                members.join(", ")
            ),
            force,
            "reload",
        )?;
        let mut failed = Vec::new();
        for member in members {
            let url = self.api_url(member)?;
            match self
                .api
                .call(reqwest::Method::POST, url, "/reload", None)
                .await
            {
                Ok(a) if a.ok() => println!(
                    "Reload request received for member {member}: {}",
                    a.message()
                ),
                Ok(a) => failed.push(format!("{member}: {} ({})", a.message(), a.status)),
                Err(e) => failed.push(format!("{member}: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("reload failed on {}", failed.join("; "))
        }
    }

    async fn reinit(&self, member: &str, force: bool) -> anyhow::Result<()> {
        let url = self.api_url(member)?;
        confirm(
            &format!("Are you sure you want to reinitialize members {member}?"),
            force,
            "reinitialize",
        )?;
        let body = json!({ "force": force });
        let answer = self
            .api
            .call(reqwest::Method::POST, url, "/reinitialize", Some(&body))
            .await?;
        if !answer.ok() {
            bail!(
                "reinitialize of {member} refused ({}): {}",
                answer.status,
                answer.message()
            );
        }
        println!("Success: reinitialize for member {member}");
        Ok(())
    }

    async fn pause(&self, pause: bool) -> anyhow::Result<()> {
        let paused = self
            .state
            .config
            .as_ref()
            .and_then(|c| c.value.get("pause"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if paused == pause {
            bail!(
                "cluster {} is {} paused",
                self.scope(),
                if pause { "already" } else { "not" }
            );
        }
        let patch = if pause {
            json!({"pause": true})
        } else {
            json!({"pause": null})
        };
        self.change_config(&patch, None).await?;
        println!(
            "Success: cluster management is {}",
            if pause { "paused" } else { "resumed" }
        );
        Ok(())
    }

    async fn edit_config(
        &self,
        sets: &[String],
        pgs: &[String],
        force: bool,
    ) -> anyhow::Result<()> {
        let (current, revision) = match &self.state.config {
            Some(c) => (c.value.clone(), Some(c.mod_revision)),
            None => (json!({}), None),
        };
        let (mut new, mut patch) = if sets.is_empty() && pgs.is_empty() {
            (edit_in_editor(&current)?, None)
        } else {
            let patch = pgbaton_views::edit::patch_from_args(sets, pgs)?;
            let mut new = current.clone();
            pgbaton_config::merge_patch(&mut new, &patch);
            (new, Some(patch))
        };
        // A declared publication or subscription taken out is dropped by the leader only
        // when the configuration names it under logical.drop, which only --force writes.
        let removed = pgbaton_views::logical::removed_logical(&current, &new);
        if !removed.is_empty() && !force {
            let list: Vec<String> = removed
                .iter()
                .map(|r| format!("  {}", r.describe()))
                .collect();
            bail!(
                "this change removes from logical: what the leader would then drop:\n{}\nrun it again with --force to drop them; nothing was changed",
                list.join("\n")
            );
        }
        if pgbaton_views::logical::record_drops(&mut new, &removed) {
            // The drop list is part of the document: write it whole.
            patch = None;
        }
        let diff = pgbaton_views::diff::unified_diff(
            &pgbaton_views::edit::to_yaml(&current),
            &pgbaton_views::edit::to_yaml(&new),
            "before",
            "after",
        );
        if diff.is_empty() {
            println!("Not changed");
            return Ok(());
        }
        print!("{diff}");
        let parsed = DynamicConfig::from_dcs_json(&new, &DynamicConfig::defaults())
            .map_err(|e| anyhow!("{e}; the configuration was not changed"))?;
        for (path, message) in
            pgbaton_config::overwritten_parameters(&parsed.value, &Default::default())
        {
            let path = path.trim_start_matches("bootstrap.dcs.");
            eprintln!("warning: {path}: {message}");
        }
        for r in &removed {
            eprintln!("dropping {}", r.describe());
        }
        confirm("Apply these changes?", force, "change the configuration")?;
        match patch {
            Some(patch) => self.change_config(&patch, Some((&new, revision))).await?,
            None => self.replace_config(&new, revision).await?,
        }
        println!("Configuration changed");
        Ok(())
    }

    /// `ctl logical [check]`: the `logical` object of the leader's `GET /patroni`.
    async fn logical(&self, check: bool, format: OutputFormat) -> anyhow::Result<()> {
        let (name, url) = self
            .api_urls_leader_first()
            .into_iter()
            .next()
            .filter(|(name, _)| self.state.leader_name() == Some(name.as_str()))
            .ok_or_else(|| anyhow!("the cluster has no leader now: the leader keeps the declared publications and subscriptions; try again once it has one"))?;
        let answer = self
            .api
            .call(reqwest::Method::GET, &url, "/patroni", None)
            .await?;
        if !answer.ok() {
            bail!(
                "{name} answered GET /patroni with {}: {}",
                answer.status,
                answer.message()
            );
        }
        let body: Value = serde_json::from_str(&answer.body)
            .with_context(|| format!("{name} did not answer GET /patroni with JSON"))?;
        let Some(logical) = body.get("logical") else {
            let declared = self
                .state
                .config
                .as_ref()
                .and_then(|c| c.value.get("logical"))
                .is_some();
            if declared {
                bail!("the leader {name} has not reported on the declared publications and subscriptions yet (its first round runs within seconds of leading); try again");
            }
            println!("Nothing declared under logical: in the dynamic configuration (pgbaton ctl edit-config, see docs/CONFIGURATION.md)");
            return Ok(());
        };
        if check {
            print!(
                "{}",
                pgbaton_views::logical::render_logical_check(logical, format)
            );
            let found = logical
                .get("problems")
                .and_then(Value::as_array)
                .is_some_and(|p| !p.is_empty());
            if found {
                std::process::exit(1);
            }
        } else {
            print!(
                "{}",
                pgbaton_views::logical::render_logical(logical, format)
            );
        }
        Ok(())
    }

    /// PATCH /config through the leader's API (else any member's); when no API answers,
    /// write `fallback` (the merged document) directly with compare-and-swap.
    pub(super) async fn change_config(
        &self,
        patch: &Value,
        fallback: Option<(&Value, Option<i64>)>,
    ) -> anyhow::Result<()> {
        self.config_request(reqwest::Method::PATCH, patch, fallback)
            .await
    }

    async fn replace_config(&self, new: &Value, revision: Option<i64>) -> anyhow::Result<()> {
        self.config_request(reqwest::Method::PUT, new, Some((new, revision)))
            .await
    }

    async fn config_request(
        &self,
        method: reqwest::Method,
        body: &Value,
        fallback: Option<(&Value, Option<i64>)>,
    ) -> anyhow::Result<()> {
        for (name, url) in self.api_urls_leader_first() {
            match self
                .api
                .call(method.clone(), &url, "/config", Some(body))
                .await
            {
                Ok(a) if a.ok() => return Ok(()),
                Ok(a) => bail!(
                    "{name} refused the configuration ({}): {}",
                    a.status,
                    a.message()
                ),
                Err(e) => eprintln!("warning: {e:#}"),
            }
        }
        let (new, revision) = match fallback {
            Some(f) => f,
            None => {
                let mut merged = self
                    .state
                    .config
                    .as_ref()
                    .map(|c| c.value.clone())
                    .unwrap_or_else(|| json!({}));
                pgbaton_config::merge_patch(&mut merged, body);
                let revision = self.state.config.as_ref().map(|c| c.mod_revision);
                return self.write_config_directly(&merged, revision).await;
            }
        };
        self.write_config_directly(new, revision).await
    }

    /// No REST API answered: validate here and compare-and-swap the DCS key ourselves.
    async fn write_config_directly(
        &self,
        new: &Value,
        revision: Option<i64>,
    ) -> anyhow::Result<()> {
        DynamicConfig::from_dcs_json(new, &DynamicConfig::defaults())
            .map_err(|e| anyhow!("{e}; the configuration was not changed"))?;
        let dcs = EtcdDcs::new(
            self.target.endpoints.clone(),
            self.target.path.clone(),
            "pgbaton-views",
            Duration::from_secs(10),
            Duration::from_secs(3),
        )
        .with_access(&self.target.access)?;
        eprintln!("warning: no REST API answered; writing the configuration to the DCS directly");
        if !dcs.set_config(new, revision).await? {
            bail!("the configuration changed in the DCS meanwhile; nothing was written, run the command again");
        }
        Ok(())
    }
}

fn list_options() -> ListOptions {
    ListOptions {
        format: OutputFormat::Pretty,
        extended: false,
        positions_at: None,
    }
}

/// Open $EDITOR (else vi) on the configuration as YAML and read it back.
fn edit_in_editor(current: &Value) -> anyhow::Result<Value> {
    let dir = tempfile_dir()?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, pgbaton_views::edit::to_yaml(current))
        .with_context(|| format!("cannot write {}", path.display()))?;
    let editor = std::env::var("EDITOR")
        .or_else(|_| std::env::var("VISUAL"))
        .unwrap_or_else(|_| "vi".to_string());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor {editor}"))?;
    if !status.success() {
        bail!("the editor {editor} exited with {status}; nothing was changed");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(pgbaton_views::edit::from_yaml(&text)?)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("pgbaton-edit-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
