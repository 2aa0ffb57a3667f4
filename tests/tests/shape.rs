//! The house's shape, enforced: no import circle between the files of any crate, and every
//! module crate built from the same rooms with the same roles.
//!
//! The files are read with `syn`, as the compiler reads them (test code, `#[cfg(test)]`, left
//! out: a test may reach anywhere in its crate). A file *uses* another when it names a path
//! into it (`use crate::store::Row`, `super::model::Quantity`, `store::find(..)`). A file naming
//! one of its ancestors (the crate root, the folder's `mod.rs`) is not a use that can close a
//! circle: a parent owns its children, and a child reads what its parent gives it.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use syn::visit::Visit;

/// The rooms of every module crate, and what each may hold.
const MODULE_FILES: [&str; 6] = [
    "domain.rs",
    "http.rs",
    "lib.rs",
    "messages.rs",
    "model.rs",
    "store.rs",
];

struct Package {
    name: String,
    /// The folder of the library's (or the binary's) root file.
    src: PathBuf,
    is_module: bool,
}

fn workspace_packages() -> Vec<Package> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success());
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut packages = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let manifest = package["manifest_path"].as_str().unwrap();
        let roots: BTreeSet<PathBuf> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k == "lib" || k == "bin")
            })
            .map(|t| {
                Path::new(t["src_path"].as_str().unwrap())
                    .parent()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        for src in roots {
            packages.push(Package {
                name: package["name"].as_str().unwrap().to_owned(),
                src,
                is_module: manifest.contains("/crates/modules/")
                    && !manifest.contains("/contract/"),
            });
        }
    }
    packages
}

/// A crate's files by module path (`[]` for the root, `["bus", "request"]` for
/// `bus/request.rs`), each with the module paths it names.
type FileGraph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        path.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        path.pop();
    }
    path
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && tokens(&a.meta).contains("test"))
}

fn tokens(node: &impl quote::ToTokens) -> String {
    node.to_token_stream().to_string()
}

/// Every path a file names, as written, its `use` trees flattened.
#[derive(Default)]
struct Paths {
    found: Vec<Vec<String>>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                path.push(n.ident.to_string());
                self.found.push(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                path.push(r.ident.to_string());
                self.found.push(path);
            }
            syn::UseTree::Glob(_) => self.found.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_test_only(attrs) {
            return;
        }
        if let syn::Item::Use(u) = item {
            self.use_tree(&mut Vec::new(), &u.tree);
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.found
            .push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }
}

/// Resolves `path`, named in the file of module `here`, to the deepest file module it reaches.
fn resolve(files: &BTreeSet<Vec<String>>, here: &[String], path: &[String]) -> Option<Vec<String>> {
    let (mut base, rest): (Vec<String>, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (here.to_vec(), &path[1..]),
        Some("super") => {
            let mut base = here.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        // A plain path names a child module of this one, or something outside the crate.
        _ => (here.to_vec(), path),
    };
    let explicit = path.len() > rest.len();
    let mut reached = (explicit && files.contains(&base)).then(|| base.clone());
    for segment in rest {
        base.push(segment.clone());
        if !files.contains(&base) {
            break;
        }
        reached = Some(base.clone());
    }
    reached
}

fn file_graph(src: &Path) -> (FileGraph, BTreeMap<Vec<String>, PathBuf>) {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    let by_module: BTreeMap<Vec<String>, PathBuf> = paths
        .iter()
        .map(|file| (module_path(src, file), file.clone()))
        .collect();
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let mut graph = FileGraph::new();
    for (module, file) in &by_module {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut visitor = Paths::default();
        visitor.visit_file(&ast);
        let uses = visitor
            .found
            .iter()
            .filter_map(|path| resolve(&modules, module, path))
            // Naming itself or an ancestor closes no circle (see the crate doc).
            .filter(|target| !module.starts_with(target))
            .collect();
        graph.insert(module.clone(), uses);
    }
    (graph, by_module)
}

/// The circles of `graph`: its strongly connected components of more than one file.
fn circles(graph: &FileGraph) -> Vec<Vec<Vec<String>>> {
    // Kosaraju: reachability both ways from each file is enough at this size.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        graph.keys().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if done.contains(node) {
            continue;
        }
        let component: Vec<Vec<String>> = graph
            .keys()
            .filter(|other| {
                *other == node
                    || (reachable[node].contains(*other) && reachable[other].contains(node))
            })
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        if component.len() > 1 {
            found.push(component);
        }
    }
    found
}

fn shown(module: &[String]) -> String {
    if module.is_empty() {
        "<root>".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn no_file_of_any_crate_imports_a_file_that_imports_it_back() {
    let packages = workspace_packages();
    assert!(packages.len() >= 10, "crates found: {}", packages.len());
    let mut found = Vec::new();
    for package in &packages {
        let (graph, _) = file_graph(&package.src);
        for circle in circles(&graph) {
            let names: Vec<String> = circle.iter().map(|m| shown(m)).collect();
            found.push(format!("{}: {}", package.name, names.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_check_finds_a_circle() {
    // The check above must be able to fail: two files naming each other are one circle.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::B; pub struct A;").unwrap();
    std::fs::write(dir.path().join("b.rs"), "pub struct B(super::a::A);").unwrap();
    std::fs::write(
        dir.path().join("c.rs"),
        "use crate::a::A; #[cfg(test)] mod tests { use crate::c; }",
    )
    .unwrap();
    let (graph, _) = file_graph(dir.path());
    let found = circles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].len(), 2, "{found:?}");
}

fn module_crates() -> Vec<Package> {
    let modules: Vec<Package> = workspace_packages()
        .into_iter()
        .filter(|p| p.is_module)
        .collect();
    assert_eq!(modules.len(), 7, "module crates found");
    modules
}

#[test]
fn every_module_crate_has_the_same_rooms() {
    for module in module_crates() {
        let mut files = Vec::new();
        rust_files(&module.src, &mut files);
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(&module.src).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, MODULE_FILES, "the files of {}", module.name);
    }
}

/// What each room of a module crate may name of its own crate, and of the world. The model
/// runs no SQL (it may name the storage's error type, as the source of its own error's
/// `Storage` case); only the edge names HTTP.
#[test]
fn every_room_of_a_module_crate_keeps_to_its_role() {
    const RUNS_SQL: [&str; 7] = [
        "query",
        "query_as",
        "query_scalar",
        "AnyConnection",
        "Db",
        "Outbox",
        "UnitOfWork",
    ];
    // room -> (rooms of its crate it may use, crates and names it must not use)
    let model_must_not: Vec<&str> = ["axum", "StatusCode", "ApiError"]
        .into_iter()
        .chain(RUNS_SQL)
        .collect();
    let rules: [(&str, &[&str], &[&str]); 5] = [
        ("model", &[], &model_must_not),
        (
            "store",
            &["model"],
            &["axum", "StatusCode", "ApiError", "banyan_bus"],
        ),
        (
            "domain",
            &["model", "store"],
            &["axum", "StatusCode", "ApiError"],
        ),
        (
            "messages",
            &["model", "domain", "store"],
            &["axum", "StatusCode", "ApiError"],
        ),
        ("http", &["model", "domain", "store"], &[]),
    ];
    let mut broken = Vec::new();
    for module in module_crates() {
        let (graph, files) = file_graph(&module.src);
        for (room, may_use, must_not) in rules {
            let key = vec![room.to_owned()];
            for used in &graph[&key] {
                if !may_use.contains(&used[0].as_str()) {
                    broken.push(format!("{}: {room} uses {}", module.name, shown(used)));
                }
            }
            let text = std::fs::read_to_string(&files[&key]).unwrap();
            let ast = syn::parse_file(&text).unwrap();
            let mut visitor = Paths::default();
            visitor.visit_file(&ast);
            for path in &visitor.found {
                for name in must_not.iter() {
                    if path.iter().any(|segment| segment == name) {
                        broken.push(format!("{}: {room} names {}", module.name, path.join("::")));
                    }
                }
            }
        }
    }
    broken.sort();
    broken.dedup();
    assert!(
        broken.is_empty(),
        "rooms out of role:\n{}",
        broken.join("\n")
    );
}

/// Every event handler is `on_<event>` (the event's name in snake case), registered through
/// the module's bus handle, and opens its unit of work with `begin_handling` (the inbox
/// entry and, on PostgreSQL, the aggregate's lock), itself or through a function of its file.
#[test]
fn every_event_handler_is_on_its_event_and_begins_with_the_inbox() {
    let mut broken = Vec::new();
    let mut handlers_seen = 0;
    for module in module_crates() {
        let text = std::fs::read_to_string(module.src.join("messages.rs")).unwrap();
        let ast = syn::parse_file(&text).unwrap();
        let mut subscriptions = Subscriptions::default();
        subscriptions.visit_file(&ast);
        let functions: BTreeMap<String, &syn::ItemFn> = ast
            .items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Fn(f) => Some((f.sig.ident.to_string(), f)),
                _ => None,
            })
            .collect();
        // The functions that open a handler's unit of work, directly or by calling one that does.
        let mut opening: BTreeSet<String> = functions
            .iter()
            .filter(|(_, f)| tokens(&f.block).contains("begin_handling"))
            .map(|(name, _)| name.clone())
            .collect();
        loop {
            let more: Vec<String> = functions
                .iter()
                .filter(|(name, f)| {
                    !opening.contains(*name) && {
                        let body = tokens(&f.block);
                        opening.iter().any(|o| body.contains(&format!("{o} (")))
                    }
                })
                .map(|(name, _)| name.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            opening.extend(more);
        }
        for handler in &subscriptions.handlers {
            handlers_seen += 1;
            let Some(function) = functions.get(handler) else {
                broken.push(format!("{}: no fn `{handler}` in messages.rs", module.name));
                continue;
            };
            let Some(event) = delivered_event(function) else {
                broken.push(format!(
                    "{}: `{handler}` takes no Delivered<Event>",
                    module.name
                ));
                continue;
            };
            let expected = format!("on_{}", snake(&event));
            if handler != &expected {
                broken.push(format!(
                    "{}: {event} is handled by `{handler}`, not `{expected}`",
                    module.name
                ));
            }
            if !opening.contains(handler) {
                broken.push(format!(
                    "{}: `{handler}` does not open its work with begin_handling",
                    module.name
                ));
            }
        }
    }
    assert!(handlers_seen >= 12, "event handlers found: {handlers_seen}");
    assert!(
        broken.is_empty(),
        "event handlers out of shape:\n{}",
        broken.join("\n")
    );
}

/// The event a handler takes: `E` of its `Delivered<E>` parameter.
fn delivered_event(function: &syn::ItemFn) -> Option<String> {
    function.sig.inputs.iter().find_map(|input| {
        let syn::FnArg::Typed(typed) = input else {
            return None;
        };
        let syn::Type::Path(path) = &*typed.ty else {
            return None;
        };
        let last = path.path.segments.last()?;
        if last.ident != "Delivered" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.first().map(tokens)
    })
}

/// The handlers given to `subscribe(state, handler)` calls.
#[derive(Default)]
struct Subscriptions {
    handlers: Vec<String>,
}

impl<'ast> Visit<'ast> for Subscriptions {
    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        if call.method == "subscribe" {
            let handler = call.args.last().map(tokens).unwrap_or_default();
            self.handlers.push(handler);
        }
        syn::visit::visit_expr_method_call(self, call);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A module's name is written once in its crate (its declaration); everything else asks the
/// declaration or the bus handle it was given.
#[test]
fn a_module_crate_writes_its_name_once() {
    let mut broken = Vec::new();
    for module in module_crates() {
        let name = module.name.trim_start_matches("banyan-");
        let quoted = format!("\"{name}\"");
        let mut files = Vec::new();
        rust_files(&module.src, &mut files);
        let count: usize = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap().matches(&quoted).count())
            .sum();
        if count != 1 {
            broken.push(format!("{}: {quoted} written {count} times", module.name));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
