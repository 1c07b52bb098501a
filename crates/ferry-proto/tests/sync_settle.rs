//! Property test of the reconcile planner (issue 18): random operations on two clients
//! and the server (files written, directories made, deletions, renames, sync rounds, and
//! rounds whose plan goes stale because the server changed meanwhile), then a settle in
//! which both clients run rounds until their plans are empty. Then the three trees are
//! identical (conflict copies included, since a copy is uploaded) and no content that a
//! user did not delete or overwrite is lost.
//!
//! The filesystem and the server are maps; the executor below does what `SyncClient`
//! does for each action, including refusing a stale precondition (a `412`, a download
//! whose hash differs, a non-empty directory) and leaving it to the next round.

use std::collections::{BTreeMap, BTreeSet};

use ferry_proto::sync::plan::{Action, ConflictNaming, IndexEntry, LocalEntry, plan};
use ferry_proto::sync::{ManifestEntry, SyncPath};
use proptest::prelude::*;

const PATHS: [&str; 7] = ["a", "b", "a/x", "a/y", "a/x/z", "c.txt", "b/c.txt"];

/// A node of a tree: a directory or a file holding a content id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(u64),
}

type Tree = BTreeMap<SyncPath, Node>;

fn sha(content: u64) -> String {
    format!("{content:064x}")
}

fn content_of(sha: &str) -> u64 {
    u64::from_str_radix(sha, 16).expect("model sha")
}

fn p(s: &str) -> SyncPath {
    SyncPath::parse(s).expect("model path")
}

/// Make the parents of `path` directories; false when one of them is a file.
fn make_parents(tree: &mut Tree, path: &SyncPath) -> bool {
    let mut parents = Vec::new();
    let mut cur = path.parent();
    while let Some(parent) = cur {
        cur = parent.parent();
        parents.push(parent);
    }
    for parent in parents.into_iter().rev() {
        match tree.get(&parent) {
            Some(Node::File(_)) => return false,
            Some(Node::Dir) => {}
            None => {
                tree.insert(parent, Node::Dir);
            }
        }
    }
    true
}

fn subtree(tree: &Tree, path: &SyncPath) -> Vec<SyncPath> {
    tree.keys()
        .filter(|k| k.starts_with(path))
        .cloned()
        .collect()
}

/// Remove `path` and everything below; the content ids removed.
fn remove(tree: &mut Tree, path: &SyncPath) -> Vec<u64> {
    subtree(tree, path)
        .into_iter()
        .filter_map(|k| match tree.remove(&k) {
            Some(Node::File(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn move_tree(tree: &mut Tree, from: &SyncPath, to: &SyncPath) -> bool {
    if tree.contains_key(to) || !tree.contains_key(from) || to.starts_with(from) {
        return false;
    }
    let mut probe = tree.clone();
    if !make_parents(&mut probe, to) {
        return false;
    }
    *tree = probe;
    for k in subtree(tree, from) {
        let node = tree.remove(&k).expect("listed");
        let rest = &k.as_str()[from.as_str().len()..];
        tree.insert(p(&format!("{to}{rest}")), node);
    }
    true
}

struct Server {
    tree: Tree,
    versions: BTreeMap<SyncPath, u64>,
    version: u64,
}

impl Server {
    fn set(&mut self, path: &SyncPath, node: Node) -> bool {
        let mut probe = self.tree.clone();
        if !make_parents(&mut probe, path) {
            return false;
        }
        for k in probe.keys() {
            if !self.tree.contains_key(k) {
                self.version += 1;
                self.versions.insert(k.clone(), self.version);
            }
        }
        self.tree = probe;
        self.tree.insert(path.clone(), node);
        self.version += 1;
        self.versions.insert(path.clone(), self.version);
        true
    }

    fn manifest(&self) -> BTreeMap<SyncPath, ManifestEntry> {
        self.tree
            .iter()
            .map(|(k, node)| {
                let entry = ManifestEntry {
                    path: k.to_string(),
                    dir: *node == Node::Dir,
                    size: 0,
                    sha256: match node {
                        Node::File(c) => Some(sha(*c)),
                        Node::Dir => None,
                    },
                    modified: 0,
                    version: self.versions[k],
                    deleted: false,
                };
                (k.clone(), entry)
            })
            .collect()
    }

    fn sha_at(&self, path: &SyncPath) -> Option<Option<String>> {
        self.tree.get(path).map(|n| match n {
            Node::File(c) => Some(sha(*c)),
            Node::Dir => None,
        })
    }
}

struct Client {
    disk: Tree,
    index: BTreeMap<SyncPath, IndexEntry>,
    naming: ConflictNaming,
}

impl Client {
    fn new(host: &str) -> Client {
        Client {
            disk: Tree::new(),
            index: BTreeMap::new(),
            naming: ConflictNaming {
                host: host.into(),
                date: "2026-11-30".into(),
            },
        }
    }

    fn scan(&self) -> BTreeMap<SyncPath, LocalEntry> {
        self.disk
            .iter()
            .map(|(k, node)| {
                let (dir, sha256) = match node {
                    Node::Dir => (true, None),
                    Node::File(c) => (false, Some(sha(*c))),
                };
                let entry = LocalEntry {
                    dir,
                    sha256,
                    size: 0,
                    modified: 0,
                };
                (k.clone(), entry)
            })
            .collect()
    }

    fn plan(&self, server: &Server) -> Vec<Action> {
        plan(&self.index, &self.scan(), &server.manifest(), &self.naming)
    }

    fn record(&mut self, path: &SyncPath, server: &Server) {
        let entry = IndexEntry {
            dir: server.tree.get(path) == Some(&Node::Dir),
            sha256: server.sha_at(path).flatten(),
            size: 0,
            modified: 0,
            version: server.versions[path],
        };
        self.index.insert(path.clone(), entry);
    }

    /// Execute `actions` the way `SyncClient` does; stale preconditions skip the step.
    fn execute(&mut self, actions: Vec<Action>, server: &mut Server) {
        for action in actions {
            match action {
                Action::DeleteLocal { path, dir } => {
                    if dir && self.disk.keys().any(|k| k.starts_with(&path) && *k != path) {
                        // Not empty: kept (and forgotten, so it is re-created remotely).
                        self.index.remove(&path);
                        continue;
                    }
                    self.disk.remove(&path);
                    self.index.remove(&path);
                }
                Action::DeleteRemote { path, dir, base } => {
                    let current = server.sha_at(&path);
                    let stale = if dir {
                        current != Some(None)
                            || server
                                .tree
                                .keys()
                                .any(|k| k.starts_with(&path) && *k != path)
                    } else {
                        current != Some(base)
                    };
                    if current.is_none() {
                        self.index.remove(&path);
                        continue;
                    }
                    if stale {
                        continue;
                    }
                    remove(&mut server.tree, &path);
                    server.version += 1;
                    self.index.remove(&path);
                }
                Action::MoveAside { path, to } => {
                    assert!(move_tree(&mut self.disk, &path, &to), "move aside {path}");
                }
                Action::MkdirLocal { path, entry } => {
                    if matches!(self.disk.get(&path), Some(Node::File(_)))
                        || !make_parents(&mut self.disk, &path)
                    {
                        continue;
                    }
                    self.disk.insert(path.clone(), Node::Dir);
                    let _ = entry;
                    if server.tree.get(&path) == Some(&Node::Dir) {
                        self.record(&path, server);
                    }
                }
                Action::MkdirRemote { path } => {
                    match server.tree.get(&path) {
                        Some(Node::Dir) => {}
                        Some(Node::File(_)) => continue,
                        None => {
                            if !server.set(&path, Node::Dir) {
                                continue;
                            }
                        }
                    }
                    self.record(&path, server);
                }
                Action::Download { path, entry } => {
                    // The bytes come from the server as it is now; the hash is checked.
                    if server.sha_at(&path) != Some(entry.sha256.clone()) {
                        continue;
                    }
                    let content = content_of(entry.sha256.as_deref().expect("file"));
                    if matches!(self.disk.get(&path), Some(Node::Dir))
                        || !make_parents(&mut self.disk, &path)
                    {
                        continue;
                    }
                    self.disk.insert(path.clone(), Node::File(content));
                    self.record(&path, server);
                }
                Action::Upload { path, base } => {
                    let Some(Node::File(content)) = self.disk.get(&path).copied() else {
                        continue;
                    };
                    let current = server.sha_at(&path);
                    let matches = match (&current, &base) {
                        (None, None) => true,
                        (Some(Some(now)), Some(base)) => now == base,
                        _ => false,
                    };
                    if !matches || !server.set(&path, Node::File(content)) {
                        continue;
                    }
                    self.record(&path, server);
                }
                Action::Record { path, entry } => {
                    if server.sha_at(&path) == Some(entry.sha256.clone()) {
                        self.record(&path, server);
                    }
                }
                Action::Forget { path } => {
                    self.index.remove(&path);
                }
                Action::RenameRemote { from, path, base } => {
                    // The server moves whatever `from` holds (no base check there); the
                    // client checks what it knows first and records `path` only when the
                    // moved content is what it has.
                    if server.sha_at(&from) != Some(Some(base.clone()))
                        || server.tree.contains_key(&path)
                    {
                        continue;
                    }
                    let before = server.tree.clone();
                    if !move_tree(&mut server.tree, &from, &path) {
                        continue;
                    }
                    for k in server.tree.keys() {
                        if !before.contains_key(k) {
                            server.version += 1;
                            server.versions.insert(k.clone(), server.version);
                        }
                    }
                    self.index.remove(&from);
                    let here = self.disk.get(&path).copied();
                    if here == Some(Node::File(content_of(&base))) {
                        self.record(&path, server);
                    }
                }
            }
        }
    }
}

/// Where a user operation happens: client 0, client 1 or the server's disk.
#[derive(Debug, Clone, Copy)]
enum Op {
    Write(usize, usize),
    Mkdir(usize, usize),
    Delete(usize, usize),
    Rename(usize, usize, usize),
    Round(usize),
    /// Client plans, the server's disk is written meanwhile, the client executes.
    StaleRound(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0..3usize;
    let path = 0..PATHS.len();
    prop_oneof![
        3 => (who.clone(), path.clone()).prop_map(|(w, p)| Op::Write(w, p)),
        1 => (who.clone(), path.clone()).prop_map(|(w, p)| Op::Mkdir(w, p)),
        2 => (who.clone(), path.clone()).prop_map(|(w, p)| Op::Delete(w, p)),
        1 => (who, path.clone(), path.clone()).prop_map(|(w, a, b)| Op::Rename(w, a, b)),
        2 => (0..2usize).prop_map(Op::Round),
        1 => (0..2usize, path).prop_map(|(c, p)| Op::StaleRound(c, p)),
    ]
}

struct World {
    server: Server,
    clients: [Client; 2],
    next_content: u64,
    /// Contents a user deleted or overwrote somewhere: allowed to disappear.
    discarded: BTreeSet<u64>,
}

impl World {
    fn tree(&mut self, who: usize) -> &mut Tree {
        match who {
            0 | 1 => &mut self.clients[who].disk,
            _ => &mut self.server.tree,
        }
    }

    fn user(&mut self, op: Op) {
        match op {
            Op::Write(who, path) => {
                let path = p(PATHS[path]);
                self.next_content += 1;
                let content = self.next_content;
                let tree = self.tree(who);
                if tree.get(&path) == Some(&Node::Dir) {
                    return;
                }
                let old = tree.get(&path).copied();
                let written = if who == 2 {
                    self.server.set(&path, Node::File(content))
                } else {
                    let tree = self.tree(who);
                    if make_parents(tree, &path) {
                        tree.insert(path, Node::File(content));
                        true
                    } else {
                        false
                    }
                };
                if written && let Some(Node::File(c)) = old {
                    self.discarded.insert(c);
                }
            }
            Op::Mkdir(who, path) => {
                let path = p(PATHS[path]);
                if self.tree(who).contains_key(&path) {
                    return;
                }
                if who == 2 {
                    self.server.set(&path, Node::Dir);
                } else {
                    let tree = self.tree(who);
                    if make_parents(tree, &path) {
                        tree.insert(path, Node::Dir);
                    }
                }
            }
            Op::Delete(who, path) => {
                let path = p(PATHS[path]);
                let gone = remove(self.tree(who), &path);
                if who == 2 && !gone.is_empty() {
                    self.server.version += 1;
                }
                self.discarded.extend(gone);
            }
            Op::Rename(who, from, to) => {
                let (from, to) = (p(PATHS[from]), p(PATHS[to]));
                if who == 2 {
                    let before = self.server.tree.clone();
                    if move_tree(&mut self.server.tree, &from, &to) {
                        for k in self.server.tree.keys() {
                            if !before.contains_key(k) {
                                self.server.version += 1;
                                self.server.versions.insert(k.clone(), self.server.version);
                            }
                        }
                    }
                } else {
                    move_tree(self.tree(who), &from, &to);
                }
            }
            Op::Round(c) => {
                let actions = self.clients[c].plan(&self.server);
                self.clients[c].execute(actions, &mut self.server);
            }
            Op::StaleRound(c, path) => {
                let actions = self.clients[c].plan(&self.server);
                self.user(Op::Write(2, path));
                self.clients[c].execute(actions, &mut self.server);
            }
        }
    }

    /// Both clients run rounds until neither has anything to do; false if that never
    /// happens within the bound.
    fn settle(&mut self) -> bool {
        for _ in 0..20 {
            let mut idle = true;
            for c in 0..2 {
                let actions = self.clients[c].plan(&self.server);
                idle &= actions.is_empty();
                self.clients[c].execute(actions, &mut self.server);
            }
            if idle {
                return true;
            }
        }
        false
    }
}

fn contents(tree: &Tree) -> BTreeSet<u64> {
    tree.values()
        .filter_map(|n| match n {
            Node::File(c) => Some(*c),
            Node::Dir => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_settle_identical_without_losing_content(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut world = World {
            server: Server { tree: Tree::new(), versions: BTreeMap::new(), version: 0 },
            clients: [Client::new("one"), Client::new("two")],
            next_content: 0,
            discarded: BTreeSet::new(),
        };
        for op in ops {
            world.user(op);
        }
        let mut before: BTreeSet<u64> = contents(&world.server.tree);
        before.extend(contents(&world.clients[0].disk));
        before.extend(contents(&world.clients[1].disk));

        prop_assert!(world.settle(), "the plans never became empty");

        let server = &world.server.tree;
        prop_assert_eq!(&world.clients[0].disk, server);
        prop_assert_eq!(&world.clients[1].disk, server);
        let after = contents(server);
        for content in before.difference(&world.discarded) {
            prop_assert!(after.contains(content), "content {content} was lost: {server:?}");
        }
    }
}
