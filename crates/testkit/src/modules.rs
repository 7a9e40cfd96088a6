//! The import graph of a crate's top-level modules, read from its sources, and the circles
//! in it: a test per crate asserts there are none, so that each module keeps one job below
//! the ones that use it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the other top-level modules its code (tests and comments left out)
/// names with `crate::`.
pub fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(src, &mut files);
    for file in files {
        let relative = file.strip_prefix(src).expect("under src");
        let mut parts = relative.iter().map(|p| p.to_string_lossy().into_owned());
        let first = parts.next().unwrap_or_default();
        let top = first.trim_end_matches(".rs").to_string();
        if matches!(top.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let named = graph.entry(top.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or_default();
                    for item in group.split(',') {
                        let name = item.trim().split("::").next().unwrap_or_default();
                        named.insert(name.to_string());
                    }
                } else {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    named.insert(name);
                }
            }
        }
        named.remove(&top);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for named in graph.values_mut() {
        named.retain(|m| modules.contains(m));
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("a source directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The circles of the graph (strongly connected components of more than one module), each
/// sorted; none when the modules are layered.
pub fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Kosaraju: finishing order on the graph, then components on the reversed graph.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<&'a str>,
        order: &mut Vec<&'a str>,
    ) {
        if !seen.insert(m) {
            return;
        }
        for next in &graph[m] {
            visit(next, graph, seen, order);
        }
        order.push(m);
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for m in graph.keys() {
        visit(m, graph, &mut seen, &mut order);
    }
    let mut reversed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (m, named) in graph {
        for n in named {
            reversed.entry(n.as_str()).or_default().push(m.as_str());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut found = Vec::new();
    for &m in order.iter().rev() {
        if assigned.contains(m) {
            continue;
        }
        let mut component = Vec::new();
        let mut stack = vec![m];
        assigned.insert(m);
        while let Some(x) = stack.pop() {
            component.push(x.to_string());
            for &y in reversed.get(x).map(Vec::as_slice).unwrap_or_default() {
                if assigned.insert(y) {
                    stack.push(y);
                }
            }
        }
        if component.len() > 1 {
            component.sort();
            found.push(component);
        }
    }
    found.sort();
    found
}

/// Panics naming every circle among the top-level modules under `src`, and for each module
/// in one the modules of its circle it names.
pub fn assert_no_import_circles(src: &Path) {
    let graph = import_graph(src);
    let found = circles(&graph);
    let explained: Vec<String> = found
        .iter()
        .map(|circle| {
            circle
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[m]
                        .iter()
                        .filter(|n| circle.contains(n))
                        .map(String::as_str)
                        .collect();
                    format!("{m} -> {}", inside.join(", "))
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect();
    assert!(
        found.is_empty(),
        "modules of {} import each other in a circle: {}; move what both need into a module below them",
        src.display(),
        explained.join(" | ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(m, named)| (m.to_string(), named.iter().map(|n| n.to_string()).collect()))
            .collect()
    }

    #[test]
    fn circles_are_the_strongly_connected_parts() {
        let g = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "d"]),
            ("d", &[]),
            ("e", &["f"]),
            ("f", &["e"]),
        ]);
        assert_eq!(circles(&g), vec![vec!["a", "b", "c"], vec!["e", "f"]]);
        let layered = graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        assert!(circles(&layered).is_empty());
    }

    #[test]
    fn the_graph_is_read_from_crate_paths_outside_tests_and_comments() {
        let dir = tempfile_dir();
        std::fs::create_dir_all(dir.join("x")).expect("dir");
        std::fs::write(dir.join("lib.rs"), "mod a;\nmod x;\n").expect("write");
        std::fs::write(
            dir.join("a.rs"),
            "use crate::{x::Y, b};\n// crate::c in a comment\n#[cfg(test)]\nmod tests { use crate::c; }\n",
        )
        .expect("write");
        std::fs::write(dir.join("b.rs"), "fn f() { crate::a::g() }\n").expect("write");
        std::fs::write(dir.join("c.rs"), "").expect("write");
        std::fs::write(dir.join("x/mod.rs"), "pub struct Y;\n").expect("write");
        let g = import_graph(&dir);
        assert_eq!(g["a"], ["b", "x"].iter().map(|s| s.to_string()).collect());
        assert_eq!(circles(&g), vec![vec!["a", "b"]]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every crate of pgbaton (`crates/*`): no module imports one that imports it back.
    #[test]
    fn the_modules_of_every_crate_are_layered() {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        for entry in std::fs::read_dir(&crates).expect("the crates directory") {
            let src = entry.expect("an entry").path().join("src");
            if src.is_dir() {
                assert_no_import_circles(&src);
                checked += 1;
            }
        }
        assert!(
            checked >= 12,
            "only {checked} crates found under {}",
            crates.display()
        );
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pgbaton-modules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
