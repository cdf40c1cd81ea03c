//! The modules of the proxy and of the daemon import each other without a cycle (ARCHITECTURE.md,
//! the module maps): a shared type lives in the lower module, never in both directions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of `src` → the sibling modules its files name as `{prefix}x`.
fn imports(src: &Path, prefix: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let module = path.file_name().unwrap().to_string_lossy().into_owned();
            for inner in std::fs::read_dir(&path).unwrap() {
                files.push((module.clone(), inner.unwrap().path()));
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            if module != "lib" && module != "mod" {
                files.push((module, path));
            }
        }
    }
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use {prefix}{a, b}` names several.
            let names: Vec<String> = if rest.starts_with('{') {
                let end = rest.find('}').unwrap_or(rest.len());
                rest[1..end]
                    .split(',')
                    .map(|s| s.trim().split("::").next().unwrap_or("").to_string())
                    .collect()
            } else {
                vec![name]
            };
            for n in names {
                if modules.contains(&n) && n != module {
                    deps.insert(n);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, if any, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn assert_acyclic_and_mapped(src: &Path, prefix: &str, what: &str) {
    let graph = imports(src, prefix);
    assert!(graph.len() > 10, "{what}: found too few modules: {graph:?}");
    if let Some(c) = cycle(&graph) {
        panic!("{what}: import cycle: {}", c.join(" -> "));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    for m in graph.keys() {
        assert!(
            arch.contains(&format!("`{m}`")),
            "ARCHITECTURE.md's {what} module map does not name `{m}`"
        );
    }
}

#[test]
fn the_proxy_modules_import_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert_acyclic_and_mapped(&root.join("crates/duet-proxy/src"), "crate::", "duet-proxy");
}

#[test]
fn the_daemon_modules_import_each_other_without_a_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert_acyclic_and_mapped(&root.join("crates/duet/src/daemon"), "super::", "daemon");
}

#[test]
fn a_cycle_is_found() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(cycle(&g), None);
}
