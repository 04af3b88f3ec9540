//! `hangar scaleset …`: flags to request bodies (refusing bad input before
//! any request), the calls, and how a scale set is shown.

use anyhow::{Context, bail};
use hangar_api::client::Client;
use hangar_api::{ScaleSetCreate, ScaleSetResponse, ScaleSetUpdate};
use uuid::Uuid;

use super::{Ctx, pool_owner, resolve_entity};
use crate::args::{
    PoolLsFilter, ScaleSetAddArgs, ScaleSetCmd, ScaleSetSettings, ScaleSetUpdateArgs,
};
use crate::input;
use crate::output::{Names, Tabular};

pub(super) async fn run(ctx: &Ctx, cmd: ScaleSetCmd) -> anyhow::Result<String> {
    match cmd {
        ScaleSetCmd::Add(a) => {
            let req = create(&a)?;
            let (kind, arg) = pool_owner(a.owner.repo, a.owner.org, a.owner.enterprise)
                .context("give --repo, --org or --enterprise")?;
            let c = ctx.client()?;
            let id = resolve_entity(&c, kind, &arg).await?;
            let s = c
                .create_scale_set(kind, id, &req)
                .await
                .with_context(|| format!("cannot add scale set {:?} to {kind} {arg}", req.name))?;
            ctx.one(&s)
        }
        ScaleSetCmd::Ls(PoolLsFilter {
            repo,
            org,
            enterprise,
            all: _,
        }) => {
            let c = ctx.client()?;
            let sets = match pool_owner(repo, org, enterprise) {
                Some((kind, arg)) => {
                    let id = resolve_entity(&c, kind, &arg).await?;
                    c.list_entity_scale_sets(kind, id)
                        .await
                        .with_context(|| format!("cannot list the scale sets of {kind} {arg}"))?
                }
                None => c
                    .list_scale_sets()
                    .await
                    .context("cannot list scale sets")?,
            };
            ctx.list_named(&c, &sets).await
        }
        ScaleSetCmd::Show { id } => {
            let c = ctx.client()?;
            let uuid = resolve(&c, &id).await?;
            let s = c
                .get_scale_set(uuid)
                .await
                .with_context(|| format!("cannot show scale set {id}"))?;
            ctx.one(&s)
        }
        ScaleSetCmd::Update(a) => {
            let req = update(&a)?;
            let c = ctx.client()?;
            let uuid = resolve(&c, &a.id).await?;
            let s = c
                .update_scale_set(uuid, &req)
                .await
                .with_context(|| format!("cannot update scale set {}", a.id))?;
            ctx.one(&s)
        }
        ScaleSetCmd::Rm { id } => {
            let c = ctx.client()?;
            let uuid = resolve(&c, &id).await?;
            c.delete_scale_set(uuid)
                .await
                .with_context(|| format!("cannot delete scale set {id}"))?;
            Ok(ctx.deleted(format!("scale set {id}")))
        }
    }
}

/// A scale set's id, or the id of the one scale set of that name.
async fn resolve(c: &Client, arg: &str) -> anyhow::Result<Uuid> {
    let arg = arg.trim();
    if let Ok(id) = arg.parse() {
        return Ok(id);
    }
    let all = c
        .list_scale_sets()
        .await
        .context("cannot list scale sets to find it by name")?;
    let found: Vec<&ScaleSetResponse> = all
        .iter()
        .filter(|s| s.name.eq_ignore_ascii_case(arg))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id),
        [] => bail!("no scale set is named {arg:?} (see `hangar scaleset ls`)"),
        many => bail!(
            "{} scale sets are named {arg:?}; give the id of one: {}",
            many.len(),
            many.iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn non_empty(flag: &str, v: &str) -> anyhow::Result<()> {
    if v.trim().is_empty() {
        bail!("{flag} must not be empty");
    }
    Ok(())
}

fn bounds(s: &ScaleSetSettings) -> anyhow::Result<()> {
    if let (Some(min), Some(max)) = (s.min_idle_runners, s.max_runners)
        && max < min
    {
        bail!("--max-runners ({max}) must not be below --min-idle-runners ({min})");
    }
    Ok(())
}

fn name(v: &str) -> anyhow::Result<String> {
    let v = v.trim();
    non_empty("--name", v)?;
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || *c == ',') {
        bail!("--name {v:?} contains {c:?}: it is one runner label, the `runs-on` value");
    }
    Ok(v.to_owned())
}

pub fn create(a: &ScaleSetAddArgs) -> anyhow::Result<ScaleSetCreate> {
    non_empty("--provider-name", &a.provider_name)?;
    non_empty("--image", &a.image)?;
    non_empty("--flavor", &a.flavor)?;
    let s = &a.settings;
    bounds(s)?;
    Ok(ScaleSetCreate {
        name: name(&a.name)?,
        provider_name: a.provider_name.clone(),
        image: a.image.clone(),
        flavor: a.flavor.clone(),
        os_type: s.os_type.clone(),
        os_arch: s.os_arch.clone(),
        min_idle_runners: s.min_idle_runners,
        max_runners: s.max_runners,
        runner_prefix: s.runner_prefix.clone(),
        runner_bootstrap_timeout: s.runner_bootstrap_timeout,
        extra_specs: input::extra_specs(s.extra_specs.as_deref(), s.extra_specs_file.as_deref())?,
        runner_group: s.runner_group.clone(),
        enabled: s.enabled,
    })
}

pub fn update(a: &ScaleSetUpdateArgs) -> anyhow::Result<ScaleSetUpdate> {
    let s = &a.settings;
    bounds(s)?;
    let u = ScaleSetUpdate {
        name: a.name.as_deref().map(name).transpose()?,
        provider_name: a.provider_name.clone(),
        image: a.image.clone(),
        flavor: a.flavor.clone(),
        os_type: s.os_type.clone(),
        os_arch: s.os_arch.clone(),
        min_idle_runners: s.min_idle_runners,
        max_runners: s.max_runners,
        runner_prefix: s.runner_prefix.clone(),
        runner_bootstrap_timeout: s.runner_bootstrap_timeout,
        extra_specs: input::extra_specs(s.extra_specs.as_deref(), s.extra_specs_file.as_deref())?,
        runner_group: s.runner_group.clone(),
        enabled: s.enabled,
    };
    let nothing = serde_json::to_value(&u)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.values().all(serde_json::Value::is_null))
        })
        .unwrap_or(false);
    if nothing {
        bail!("nothing to update: give at least one setting (see `hangar scaleset update --help`)");
    }
    Ok(u)
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl Tabular for ScaleSetResponse {
    const HEADERS: &'static [&'static str] = &[
        "ID", "NAME", "ENTITY", "PROVIDER", "IMAGE", "FLAVOR", "MIN IDLE", "MAX", "DESIRED",
        "RUNNERS", "ENABLED", "STATE",
    ];
    /// A scale set is known by its name (`runs-on`, and what `show`/`rm`
    /// take), its entity by name too: no ids, so it fits 100 columns.
    const COLUMNS: &'static [&'static str] =
        &["NAME", "ENTITY", "PROVIDER", "RUNNERS", "DESIRED", "STATE"];
    fn columns(&self, names: &Names) -> Vec<String> {
        vec![
            self.name.clone(),
            names.entity(&self.entity_id),
            self.provider_name.clone(),
            format!("{}/{}", self.instance_count, self.max_runners),
            self.desired_runners.to_string(),
            if self.enabled {
                self.state.clone()
            } else {
                "disabled".into()
            },
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.id.to_string(),
            self.name.clone(),
            self.entity_id.to_string(),
            self.provider_name.clone(),
            self.image.clone(),
            self.flavor.clone(),
            self.min_idle_runners.to_string(),
            self.max_runners.to_string(),
            self.desired_runners.to_string(),
            self.instance_count.to_string(),
            self.enabled.to_string(),
            self.state.clone(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let stats = self.statistics.unwrap_or_default();
        vec![
            ("id", self.id.to_string()),
            ("name", self.name.clone()),
            ("entity_id", self.entity_id.to_string()),
            ("pool_id", self.pool_id.to_string()),
            ("github_id", opt(&self.github_id)),
            ("runner_group", opt(&self.runner_group)),
            ("runner_group_id", opt(&self.runner_group_id)),
            ("state", self.state.clone()),
            ("last_error", opt(&self.last_error)),
            ("provider_name", self.provider_name.clone()),
            ("image", self.image.clone()),
            ("flavor", self.flavor.clone()),
            ("os_type", self.os_type.clone()),
            ("os_arch", self.os_arch.clone()),
            ("min_idle_runners", self.min_idle_runners.to_string()),
            ("max_runners", self.max_runners.to_string()),
            ("desired_runners", self.desired_runners.to_string()),
            ("runner_prefix", self.runner_prefix.clone()),
            (
                "runner_bootstrap_timeout",
                format!("{} min", self.runner_bootstrap_timeout),
            ),
            ("extra_specs", self.extra_specs.to_string()),
            ("enabled", self.enabled.to_string()),
            ("instance_count", self.instance_count.to_string()),
            ("idle_runners", self.idle_runners.to_string()),
            ("active_runners", self.active_runners.to_string()),
            ("assigned_jobs", stats.total_assigned_jobs.to_string()),
            ("running_jobs", stats.total_running_jobs.to_string()),
            ("health", self.health.state.clone()),
            (
                "created_at",
                self.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::args::{Cli, Command};

    fn parse(args: &[&str]) -> ScaleSetCmd {
        let mut all = vec!["hangar"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Scaleset(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn add_takes_garm_cli_flags() {
        let ScaleSetCmd::Add(a) = parse(&[
            "scaleset",
            "add",
            "--org",
            "octo",
            "--name",
            "lab-ubuntu",
            "--provider-name",
            "lxd",
            "--image",
            "ubuntu:22.04",
            "--flavor",
            "default",
            "--min-idle-runners",
            "1",
            "--max-runners",
            "5",
            "--runner-group",
            "lab",
            "--extra-specs",
            r#"{"proxy": {"https_proxy": "http://proxy:3128"}}"#,
            "--os-type",
            "linux",
            "--os-arch",
            "amd64",
            "--enabled",
            "true",
        ]) else {
            panic!("not add")
        };
        assert_eq!(a.owner.org.as_deref(), Some("octo"));
        let req = create(&a).unwrap();
        assert_eq!(req.name, "lab-ubuntu");
        assert_eq!((req.min_idle_runners, req.max_runners), (Some(1), Some(5)));
        assert_eq!(req.runner_group.as_deref(), Some("lab"));
        assert_eq!(req.enabled, Some(true));
        assert_eq!(
            req.extra_specs.unwrap()["proxy"]["https_proxy"],
            "http://proxy:3128"
        );
        let ScaleSetCmd::Add(a) = parse(&[
            "scale-set",
            "create",
            "-r",
            "octo/app",
            "--name",
            "x",
            "--provider-name",
            "p",
            "--image",
            "i",
            "--flavor",
            "f",
        ]) else {
            panic!("not add")
        };
        assert_eq!(a.owner.repo.as_deref(), Some("octo/app"));
    }

    #[test]
    fn bad_flags_are_refused_before_any_request() {
        let mut all = vec![
            "hangar",
            "scaleset",
            "add",
            "--name",
            "x",
            "--provider-name",
            "p",
        ];
        all.extend(["--image", "i", "--flavor", "f"]);
        // No owner, or two.
        assert!(Cli::try_parse_from(&all).is_err());
        let mut two = all.clone();
        two.extend(["--org", "o", "--repo", "r"]);
        assert!(Cli::try_parse_from(&two).is_err());

        let add = |extra: &[&str]| {
            let mut v = vec![
                "scaleset",
                "add",
                "--org",
                "o",
                "--provider-name",
                "p",
                "--image",
                "i",
                "--flavor",
                "f",
            ];
            v.extend_from_slice(extra);
            let ScaleSetCmd::Add(a) = parse(&v) else {
                panic!()
            };
            format!("{:#}", create(&a).unwrap_err())
        };
        assert!(add(&["--name", "two words"]).contains("--name"));
        assert!(add(&["--name", " "]).contains("--name"));
        assert!(
            add(&[
                "--name",
                "x",
                "--min-idle-runners",
                "3",
                "--max-runners",
                "1"
            ])
            .contains("--max-runners")
        );
        assert!(add(&["--name", "x", "--extra-specs", "[1]"]).contains("JSON object"));

        let ScaleSetCmd::Update(u) = parse(&["scaleset", "update", "lab"]) else {
            panic!()
        };
        assert!(format!("{:#}", update(&u).unwrap_err()).contains("nothing to update"));
    }

    #[test]
    fn ls_show_update_rm() {
        assert!(matches!(parse(&["scaleset", "ls"]), ScaleSetCmd::Ls(f) if f.org.is_none()));
        assert!(
            matches!(parse(&["scaleset", "list", "--enterprise", "e"]), ScaleSetCmd::Ls(f) if f.enterprise.as_deref() == Some("e"))
        );
        assert!(
            matches!(parse(&["scaleset", "show", "lab"]), ScaleSetCmd::Show { id } if id == "lab")
        );
        assert!(matches!(
            parse(&["scaleset", "rm", "lab"]),
            ScaleSetCmd::Rm { .. }
        ));
        assert!(matches!(
            parse(&["scaleset", "delete", "lab"]),
            ScaleSetCmd::Rm { .. }
        ));
        let ScaleSetCmd::Update(u) = parse(&[
            "scaleset",
            "update",
            "lab",
            "--name",
            "lab-2",
            "--max-runners",
            "8",
            "--enabled=false",
        ]) else {
            panic!()
        };
        let req = update(&u).unwrap();
        assert_eq!(req.name.as_deref(), Some("lab-2"));
        assert_eq!((req.max_runners, req.enabled), (Some(8), Some(false)));
        assert_eq!(req.image, None);
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["name"], "lab-2");
    }

    /// The default scale set table fits 100 columns and names the entity
    /// (no scale set or entity id); `--long` has every column, ids
    /// included.
    #[test]
    fn default_table_fits_100_columns_and_shows_names() {
        use crate::args::OutputFormat;
        use crate::output::list_named;
        let entity: hangar_api::EntityResponse = serde_json::from_value(serde_json::json!({
            "id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f", "kind": "organization",
            "owner": "", "name": "octo-platform", "credentials_name": "garm",
            "endpoint": "github.com",
            "webhook_url": "http://127.0.0.1:9997/webhooks/9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "pool_count": 1,
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        }))
        .unwrap();
        let set: ScaleSetResponse = serde_json::from_value(serde_json::json!({
            "id": "5f0c2a44-1b7e-4a53-9d6e-0e1f2a3b4c5d",
            "entity_id": "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "pool_id": "0d9b1c59-7c64-4d5c-a7c4-0a2f0e5f6a11",
            "name": "lab-ubuntu-2204-confidential",
            "provider_name": "azure_external",
            "image": "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest",
            "flavor": "Standard_DC2as_v5",
            "os_type": "linux", "os_arch": "amd64",
            "min_idle_runners": 1, "max_runners": 10,
            "runner_prefix": "hangar", "runner_bootstrap_timeout": 20,
            "extra_specs": {}, "runner_group": "lab", "enabled": true,
            "github_id": 42, "runner_group_id": 3,
            "state": "active", "last_error": null, "statistics": null,
            "desired_runners": 3, "instance_count": 2,
            "idle_runners": 1, "active_runners": 1,
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        }))
        .unwrap();
        let names = Names::new(std::slice::from_ref(&entity), &[]);
        let sets = std::slice::from_ref(&set);
        let widest = |t: &str| t.lines().map(|l| l.chars().count()).max().unwrap_or(0);

        let table = list_named(OutputFormat::Table, sets, &names).unwrap();
        assert!(widest(&table) <= 100, "{}\n{table}", widest(&table));
        let header: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap()
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            header,
            ["NAME", "ENTITY", "PROVIDER", "RUNNERS", "DESIRED", "STATE"]
        );
        for want in [
            "lab-ubuntu-2204-confidential",
            "octo-platform",
            "azure_external",
            "2/10",
            "active",
        ] {
            assert!(table.contains(want), "{want} missing:\n{table}");
        }
        assert!(
            !table.contains("5f0c2a44") && !table.contains("9a4b9e43"),
            "no ids in the default table:\n{table}"
        );

        // Disabled shows as such, whatever GitHub's state.
        let mut off = set.clone();
        off.enabled = false;
        let t = list_named(OutputFormat::Table, &[off], &names).unwrap();
        assert!(t.contains("disabled"), "{t}");

        // `--long`: every column, whole ids (so wider than 100).
        let wide = list_named(OutputFormat::Wide, sets, &names).unwrap();
        assert!(widest(&wide) > 100, "{wide}");
        for want in [
            "5f0c2a44-1b7e-4a53-9d6e-0e1f2a3b4c5d",
            "9a4b9e43-5e0b-4bd4-b0cb-4d2a2d0a7e8f",
            "Standard_DC2as_v5",
            "MIN IDLE",
        ] {
            assert!(wide.contains(want), "{want} missing:\n{wide}");
        }
    }
}
