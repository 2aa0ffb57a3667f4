//! `banyan diagram`: the architecture diagram, drawn from what the modules register.
//!
//! Nothing here is a list to keep up to date. The modules start, as in `cargo run`, on a
//! throw-away SQLite directory; the bus then knows every request each answers and every event
//! each subscribes to. What each sends is its `calls` (the identity tokens allow nothing
//! else), and what each publishes its `publishes` (its outbox refuses anything else). So a
//! module that starts answering, sending, publishing or following something changes the
//! diagram, and `diagram_test` fails until the committed one is written again.
//!
//! Two renderings of one graph: Mermaid (GitHub draws it in Markdown) and SVG, laid out by
//! `layout-rs` from the DOT text written here.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use banyan_bus::module_of;
use figment::{Figment, providers::Serialized};

use crate::{config, modules::all_modules, server::Server};

/// The committed renderings, relative to the repository's root.
pub const MERMAID_FILE: &str = "docs/architecture.mmd";
pub const SVG_FILE: &str = "docs/architecture.svg";

/// The node standing for every module, for the events they all follow.
const EVERY_MODULE: &str = "every_module";

/// One module as the diagram shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleView {
    pub name: &'static str,
    pub description: &'static str,
    /// Subjects of the requests it answers.
    pub answers: Vec<&'static str>,
    /// Subjects of the requests it sends.
    pub calls: Vec<&'static str>,
    /// Subjects of the events it publishes.
    pub publishes: Vec<&'static str>,
    /// Subjects of the events it handles.
    pub subscribes: Vec<&'static str>,
}

/// Every module, in the order the app lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    pub modules: Vec<ModuleView>,
}

/// An arrow: `from` → `to`, with the subjects it carries.
struct Arrow {
    from: &'static str,
    to: &'static str,
    kind: Kind,
    subjects: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Request,
    Event,
}

impl Architecture {
    /// Starts every module in this process on a fresh SQLite directory and reads what they
    /// registered, then stops them and removes the directory.
    pub async fn of_the_code() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("banyan-diagram-{}", uuid::Uuid::now_v7()));
        let built = Self::started_in(&dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        built
    }

    async fn started_in(dir: &Path) -> anyhow::Result<Self> {
        let figment = Figment::from(config::defaults()).merge(Serialized::defaults(
            serde_json::json!({
                "server": { "addr": "127.0.0.1:0", "state_dir": dir },
                "database": { "url": format!("sqlite://{}", dir.display()) },
                "metrics": { "enabled": false },
                // Never served: only the modules' start needs one.
                "auth": { "jwt_secret": format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()) },
            }),
        ));
        let settings = config::load(&figment)?;
        let server = Server::build(settings, figment).await?;
        let wiring = server.bus().wiring();
        let answered = wiring.handled_subjects();
        let modules = all_modules()
            .iter()
            .map(|module| {
                let name = module.name();
                ModuleView {
                    name,
                    description: module.description(),
                    answers: answered
                        .iter()
                        .copied()
                        .filter(|subject| module_of(subject) == name)
                        .collect(),
                    calls: sorted(module.calls()),
                    publishes: sorted(module.publishes()),
                    subscribes: wiring.subscriptions_of(name),
                }
            })
            .collect();
        server.stop().await;
        Ok(Self { modules })
    }

    /// Events every module follows (the revocation of tokens): drawn once, to "every
    /// module", rather than as an arrow to each.
    fn followed_by_all(&self) -> Vec<&'static str> {
        let Some((first, rest)) = self.modules.split_first() else {
            return Vec::new();
        };
        (first.subscribes.iter().copied())
            .filter(|subject| rest.iter().all(|m| m.subscribes.contains(subject)))
            .collect()
    }

    /// The arrows: a request from its caller to the module answering it, an event from its
    /// publisher to each subscriber; one arrow per pair and kind, naming what it carries.
    fn arrows(&self) -> Vec<Arrow> {
        let everywhere = self.followed_by_all();
        let mut arrows: BTreeMap<(&'static str, &'static str, Kind), Vec<&'static str>> =
            BTreeMap::new();
        for module in &self.modules {
            for subject in &module.calls {
                arrows
                    .entry((module.name, module_of(subject), Kind::Request))
                    .or_default()
                    .push(subject);
            }
            for subject in module.subscribes.iter().filter(|s| !everywhere.contains(s)) {
                arrows
                    .entry((module_of(subject), module.name, Kind::Event))
                    .or_default()
                    .push(subject);
            }
        }
        for subject in everywhere {
            arrows
                .entry((module_of(subject), EVERY_MODULE, Kind::Event))
                .or_default()
                .push(subject);
        }
        arrows
            .into_iter()
            .map(|((from, to, kind), subjects)| Arrow {
                from,
                to,
                kind,
                subjects,
            })
            .collect()
    }

    fn has_broadcasts(&self) -> bool {
        !self.followed_by_all().is_empty()
    }

    /// Mermaid: modules as boxes, requests as solid arrows, events as dotted ones.
    pub fn mermaid(&self) -> String {
        let mut out = String::from(
            "%% Generated by `banyan diagram` from the modules' registrations; do not edit.\n\
             %% Solid: a request (caller --> callee). Dotted: an event (publisher -.-> subscriber).\n\
             flowchart LR\n",
        );
        for module in &self.modules {
            let _ = writeln!(
                out,
                "  {}[\"<b>{}</b><br/>{}\"]",
                module.name,
                module.name,
                module.description.trim_end_matches('.')
            );
        }
        if self.has_broadcasts() {
            let _ = writeln!(out, "  {EVERY_MODULE}([\"every module\"])");
        }
        for arrow in self.arrows() {
            let label = short_names(&arrow.subjects, "<br/>");
            let line = match arrow.kind {
                Kind::Request => "-->",
                Kind::Event => "-.->",
            };
            let _ = writeln!(out, "  {} {line}|\"{label}\"| {}", arrow.from, arrow.to);
        }
        out
    }

    /// The same graph in Graphviz's DOT, for the SVG's layout.
    fn dot(&self) -> String {
        let mut out = String::from("digraph banyan {\n  rankdir=LR;\n");
        for module in &self.modules {
            let _ = writeln!(
                out,
                "  {} [shape=box, label=\"{}\"];",
                module.name, module.name
            );
        }
        if self.has_broadcasts() {
            let _ = writeln!(
                out,
                "  {EVERY_MODULE} [shape=ellipse, label=\"every module\"];"
            );
        }
        for arrow in self.arrows() {
            let style = match arrow.kind {
                Kind::Request => "solid",
                Kind::Event => "dashed",
            };
            let _ = writeln!(
                out,
                "  {} -> {} [style={style}, label=\"{}\"];",
                arrow.from,
                arrow.to,
                short_names(&arrow.subjects, ", ")
            );
        }
        out.push_str("}\n");
        out
    }

    /// The SVG: the DOT graph laid out and drawn by `layout-rs`.
    pub fn svg(&self) -> anyhow::Result<String> {
        use layout::{backends::svg::SVGWriter, gv};
        let dot = self.dot();
        let mut parser = gv::DotParser::new(&dot);
        let graph = parser
            .process()
            .map_err(|e| anyhow::anyhow!("the diagram's DOT does not parse: {e}"))?;
        let mut builder = gv::GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut svg = SVGWriter::new();
        visual.do_it(false, false, false, &mut svg);
        Ok(stable_styles(&svg.finalize()))
    }

    /// Writes both renderings under `root` (the repository), returning the files written.
    pub fn write(&self, root: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let files = [
            (root.join(MERMAID_FILE), self.mermaid()),
            (root.join(SVG_FILE), self.svg()?),
        ];
        let mut written = Vec::new();
        for (path, text) in files {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The SVG writer lists its font classes from a `HashMap`, so their order changes from run
/// to run; sorted, the file is the same for the same graph and the committed one can be
/// compared.
fn stable_styles(svg: &str) -> String {
    let Some((head, rest)) = svg.split_once("<style>\n") else {
        return svg.to_owned();
    };
    let Some((styles, tail)) = rest.split_once("</style>") else {
        return svg.to_owned();
    };
    let mut lines: Vec<&str> = styles.lines().collect();
    lines.sort_unstable();
    format!("{head}<style>\n{}\n</style>{tail}", lines.join("\n"))
}

fn sorted(subjects: &[&'static str]) -> Vec<&'static str> {
    let mut subjects = subjects.to_vec();
    subjects.sort_unstable();
    subjects
}

/// `orders.order_placed.v1` → `order_placed` (the arrow names the modules; a version other
/// than v1 is kept).
fn short_names(subjects: &[&'static str], separator: &str) -> String {
    subjects
        .iter()
        .map(|subject| {
            let rest = subject.split_once('.').map_or(*subject, |(_, rest)| rest);
            rest.strip_suffix(".v1").unwrap_or(rest)
        })
        .collect::<Vec<_>>()
        .join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repository() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The committed diagram is the code's: regenerate it with `cargo run -- diagram`.
    #[tokio::test]
    async fn the_committed_diagram_matches_the_code() {
        let architecture = Architecture::of_the_code().await.unwrap();
        let read = |file: &str| std::fs::read_to_string(repository().join(file)).unwrap();
        let stale = "is stale: run `cargo run -- diagram` and commit it";
        assert_eq!(
            read(MERMAID_FILE),
            architecture.mermaid(),
            "{MERMAID_FILE} {stale}"
        );
        assert_eq!(
            read(SVG_FILE),
            architecture.svg().unwrap(),
            "{SVG_FILE} {stale}"
        );
        // README shows the picture, ARCHITECTURE.md the Mermaid graph itself.
        assert!(
            read("README.md").contains(SVG_FILE),
            "README does not show the diagram"
        );
        assert!(
            read("ARCHITECTURE.md").contains(&format!("```mermaid\n{}```", architecture.mermaid())),
            "ARCHITECTURE.md's mermaid block {stale} (copy {MERMAID_FILE} into it)"
        );
    }

    #[tokio::test]
    async fn every_module_is_drawn_with_what_it_registered() {
        let architecture = Architecture::of_the_code().await.unwrap();
        let names: Vec<_> = architecture.modules.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            all_modules().iter().map(|m| m.name()).collect::<Vec<_>>()
        );
        let orders = architecture
            .modules
            .iter()
            .find(|m| m.name == "orders")
            .unwrap();
        assert!(orders.calls.contains(&"cart.get_cart.v1"), "{orders:?}");
        assert!(
            orders.subscribes.contains(&"payments.payment_completed.v1"),
            "{orders:?}"
        );
        assert!(
            orders.publishes.contains(&"orders.order_placed.v1"),
            "{orders:?}"
        );
        let mermaid = architecture.mermaid();
        assert!(
            mermaid.contains("orders -->|\"get_cart\"| cart"),
            "{mermaid}"
        );
        assert!(
            mermaid.contains("payments -.->|\"payment_completed<br/>payment_failed\"| orders"),
            "{mermaid}"
        );
        let svg = architecture.svg().unwrap();
        assert!(
            svg.contains("<svg") && svg.contains(">every module<"),
            "{svg}"
        );
    }
}
