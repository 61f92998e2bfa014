//! `cargo xtask layering`: the workspace's crate dependencies against the
//! layers docs/architecture.md declares.
//!
//! The table under `## Layers` gives each crate a layer and the crates it
//! must never depend on. A crate's dependencies (normal and build) must lie
//! in lower layers; its dev-dependencies (tests, benches) in its own layer or
//! lower; nothing, of any kind, on its forbidden list; and every workspace
//! crate must be in the table.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// One row of the declared table.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Layer (0 = the bottom).
    pub layer: u32,
    /// Crates it must never depend on.
    pub forbidden: Vec<String>,
}

/// One dependency of a workspace crate on another.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependency {
    /// The crate that depends.
    pub from: String,
    /// The crate depended on.
    pub to: String,
    /// Whether it is a dev-dependency.
    pub dev: bool,
}

/// The crate names written in backticks in `cell`.
fn crate_names(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The `## Layers` table of `markdown` (`| layer | crate | must not depend on |`).
pub fn declared_layers(markdown: &str) -> Result<BTreeMap<String, Declared>> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .context("no `## Layers` section")?;
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        let Some(Ok(layer)) = cells.first().map(|c| c.trim().parse::<u32>()) else {
            continue; // the header and its rule
        };
        let names = crate_names(cells.get(1).copied().unwrap_or_default());
        let [name] = &names[..] else {
            bail!("layer row without exactly one crate in backticks: {line}");
        };
        let name = name.clone();
        let forbidden = crate_names(cells.get(2).copied().unwrap_or_default());
        if out
            .insert(name.clone(), Declared { layer, forbidden })
            .is_some()
        {
            bail!("`{name}` is declared twice");
        }
    }
    if out.is_empty() {
        bail!("the `## Layers` section has no rows");
    }
    Ok(out)
}

/// Every way `dependencies` among `members` break `declared`.
pub fn violations(
    declared: &BTreeMap<String, Declared>,
    members: &[String],
    dependencies: &[Dependency],
) -> Vec<String> {
    let mut out: Vec<String> = members
        .iter()
        .filter(|m| !declared.contains_key(*m))
        .map(|m| format!("`{m}` is a workspace crate but has no layer"))
        .collect();
    for d in dependencies {
        let (Some(from), Some(to)) = (declared.get(&d.from), declared.get(&d.to)) else {
            continue; // reported above
        };
        let kind = if d.dev {
            "dev-dependency"
        } else {
            "dependency"
        };
        if from.forbidden.contains(&d.to) {
            out.push(format!(
                "`{}` must not depend on `{}` (a {kind})",
                d.from, d.to
            ));
        } else if to.layer > from.layer || (!d.dev && to.layer == from.layer) {
            out.push(format!(
                "`{}` (layer {}) has a {kind} on `{}` (layer {})",
                d.from, from.layer, d.to, to.layer
            ));
        }
    }
    out
}

/// Workspace members and their dependencies on each other, from `cargo metadata`.
fn workspace_graph(root: &Path, cargo: &str) -> Result<(Vec<String>, Vec<Dependency>)> {
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata's JSON")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata without packages")?;
    let members: Vec<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut deps = Vec::new();
    for p in packages {
        let from = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default();
            if members.iter().any(|m| m == to) {
                deps.push(Dependency {
                    from: from.to_string(),
                    to: to.to_string(),
                    dev: d["kind"].as_str() == Some("dev"),
                });
            }
        }
    }
    Ok((members, deps))
}

/// Checks the workspace at `root` against its docs/architecture.md.
pub fn check(root: &Path, cargo: &str) -> Result<()> {
    let doc = root.join("docs/architecture.md");
    let text =
        std::fs::read_to_string(&doc).with_context(|| format!("{}: cannot read", doc.display()))?;
    let declared = declared_layers(&text).with_context(|| doc.display().to_string())?;
    let (members, deps) = workspace_graph(root, cargo)?;
    let found = violations(&declared, &members, &deps);
    if !found.is_empty() {
        bail!(
            "the crate dependencies break the layers of {}:\n  {}",
            doc.display(),
            found.join("\n  ")
        );
    }
    println!(
        "layering: {} crates, {} dependencies between them, as {} declares",
        members.len(),
        deps.len(),
        doc.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# A\n\n## Layers\n\n| layer | crate | must not depend on |\n|---|---|---|\n\
        | 0 | `store` | |\n| 0 | `lm` | |\n| 1 | `net` | `store` |\n| 2 | `app` | |\n\n## Next\n| 9 | `x` | |\n";

    fn dep(from: &str, to: &str, dev: bool) -> Dependency {
        Dependency {
            from: from.into(),
            to: to.into(),
            dev,
        }
    }

    fn members() -> Vec<String> {
        ["store", "lm", "net", "app"].map(String::from).to_vec()
    }

    #[test]
    fn the_table_is_read_from_its_section_only() {
        let d = declared_layers(DOC).unwrap();
        assert_eq!(d.len(), 4);
        assert_eq!(d["net"].layer, 1);
        assert_eq!(d["net"].forbidden, vec!["store".to_string()]);
        assert!(!d.contains_key("x"));
        assert!(declared_layers("# no layers\n").is_err());
        let twice = DOC.replace("| 2 | `app` |", "| 2 | `lm` |");
        assert!(declared_layers(&twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn downward_dependencies_pass_and_every_breach_is_named() {
        let d = declared_layers(DOC).unwrap();
        let fine = [
            dep("net", "lm", false),
            dep("app", "net", false),
            dep("lm", "store", true),
        ];
        assert!(violations(&d, &members(), &fine).is_empty());
        let bad = [
            dep("lm", "net", false),   // upward
            dep("store", "lm", false), // same layer, not a dev-dependency
            dep("net", "store", true), // forbidden, even for tests
        ];
        let v = violations(&d, &members(), &bad);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("`lm` (layer 0) has a dependency on `net` (layer 1)"));
        assert!(v[2].contains("`net` must not depend on `store`"));
        let mut more = members();
        more.push("new".into());
        let v = violations(&d, &more, &[]);
        assert_eq!(
            v,
            vec!["`new` is a workspace crate but has no layer".to_string()]
        );
    }
}
