//! The inspector's vocabulary: a tree of named values.
//!
//! Palacios's inspector shows a VM as a tree (`cpu0/regs/rax`,
//! `devices/pic/master/imr`); Alcazar's does the same. Anything that has
//! state worth showing — a vCPU, a device — builds a [`Tree`] of its
//! registers when asked, and the VMM hangs those trees under one root
//! that the CLI (`alcazar inspect NAME [PATH]`) and the API serve.
//!
//! Values are text, already formatted the way the manual writes them
//! (hex for addresses and registers, decimal for counts), so a student
//! reads `0xffffffff81000000`, not `18446744071578845184`.

use std::fmt::Display;

/// One entry of a [`Tree`]: a value or a subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A formatted value.
    Value(String),
    /// Named children, in the order they were added.
    Tree(Tree),
}

/// Named values and subtrees, in insertion order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: Vec<(String, Node)>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value shown as written (`Display`): counts, flags, names.
    pub fn value(&mut self, name: impl Into<String>, value: impl Display) -> &mut Self {
        self.entries
            .push((name.into(), Node::Value(value.to_string())));
        self
    }

    /// Adds a value shown in hex with `0x` (`width` hex digits, zero
    /// padded): registers and addresses.
    pub fn hex(&mut self, name: impl Into<String>, value: u64, width: usize) -> &mut Self {
        self.value(name, format!("{value:#0w$x}", w = width + 2))
    }

    /// Adds a subtree.
    pub fn child(&mut self, name: impl Into<String>, tree: Tree) -> &mut Self {
        self.entries.push((name.into(), Node::Tree(tree)));
        self
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[(String, Node)] {
        &self.entries
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The node at `path`, names separated by `/` (`cpu0/regs/rip`); the
    /// empty path is the tree itself. `None` if a name is missing.
    pub fn get(&self, path: &str) -> Option<Node> {
        let mut here = Node::Tree(self.clone());
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let Node::Tree(t) = here else { return None };
            here = t.entries.into_iter().find(|(n, _)| n == name)?.1;
        }
        Some(here)
    }

    /// Every value with its full path (`cpu0/regs/rip = 0x...`), depth
    /// first in order, paths relative to this tree and prefixed with
    /// `prefix`.
    pub fn flatten(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.flatten_into(prefix, &mut out);
        out
    }

    fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        for (name, node) in &self.entries {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            match node {
                Node::Value(v) => out.push((path, v.clone())),
                Node::Tree(t) => t.flatten_into(&path, out),
            }
        }
    }
}

impl Node {
    /// Every value under this node with its path (a value alone: one
    /// entry named `prefix`).
    pub fn flatten(&self, prefix: &str) -> Vec<(String, String)> {
        match self {
            Node::Value(v) => vec![(prefix.to_string(), v.clone())],
            Node::Tree(t) => t.flatten(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut regs = Tree::new();
        regs.hex("rip", 0xfff0, 16).value("halted", false);
        let mut cpu = Tree::new();
        cpu.child("regs", regs);
        let mut root = Tree::new();
        root.child("cpu0", cpu).value("state", "paused");
        root
    }

    #[test]
    fn paths_reach_values_and_subtrees() {
        let t = sample();
        assert_eq!(
            t.get("cpu0/regs/rip"),
            Some(Node::Value("0x000000000000fff0".into()))
        );
        assert_eq!(t.get("/state/"), Some(Node::Value("paused".into())));
        assert!(matches!(t.get("cpu0"), Some(Node::Tree(_))));
        assert_eq!(t.get(""), Some(Node::Tree(t.clone())));
        assert_eq!(t.get("cpu0/regs/rip/more"), None);
        assert_eq!(t.get("cpu1"), None);
    }

    #[test]
    fn flatten_lists_full_paths_in_order() {
        let flat = sample().flatten("");
        let names: Vec<&str> = flat.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["cpu0/regs/rip", "cpu0/regs/halted", "state"]);
        let sub = sample().get("cpu0").unwrap().flatten("cpu0");
        assert_eq!(sub[1], ("cpu0/regs/halted".into(), "false".into()));
    }
}
