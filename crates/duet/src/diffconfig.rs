//! `duet diff-config [--peer NODE]`: what differs between this node's cluster-wide config and
//! a peer's (`duet_config::drift`), from `GET /v1/config/cluster`. The peer's view comes over
//! the heartbeats, in pieces, while the two hashes differ.

use duet_admin::ConfigViews;

use crate::status::Target;

/// Runs the command; 0 when the two agree, 1 when they differ, 2 when it cannot tell.
pub fn run(target: &Target, peer: Option<&str>) -> i32 {
    let views: ConfigViews = match target
        .get("/v1/config/cluster")
        .and_then(|b| serde_json::from_str(&b).map_err(|e| format!("unexpected answer: {e}")))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("duet diff-config: {e}");
            return 2;
        }
    };
    let chosen = match peer {
        Some(name) => views.peers.iter().find(|p| p.name == name),
        None if views.peers.len() == 1 => views.peers.first(),
        None => {
            eprintln!(
                "duet diff-config: name the peer with --peer ({})",
                views
                    .peers
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return 2;
        }
    };
    let Some(p) = chosen else {
        eprintln!(
            "duet diff-config: {:?} is not a peer of {} (no [heartbeat] peer by that name has been heard)",
            peer.unwrap_or_default(),
            views.node
        );
        return 2;
    };
    let Some(hash) = &p.hash else {
        eprintln!(
            "duet diff-config: {}'s config hash has not been heard (is it running a build that sends it?)",
            p.name
        );
        return 2;
    };
    if *hash == views.hash {
        println!(
            "{} and {} agree on the cluster-wide config (hash {hash})",
            views.node, p.name
        );
        return 0;
    }
    match (&p.view, &p.view_hash) {
        (Some(view), Some(vh)) if vh == hash => {
            println!("--- {} (this node, {})", views.node, views.hash);
            println!("+++ {} ({hash})", p.name);
            print!("{}", diff(&views.view, view));
            1
        }
        _ => {
            eprintln!(
                "duet diff-config: {} has another cluster-wide config (hash {hash}, this node {}); its text arrives over the heartbeats in a few seconds, try again",
                p.name, views.hash
            );
            2
        }
    }
}

/// The lines that differ, with two lines of context: `-` this node's, `+` the peer's.
pub fn diff(ours: &str, theirs: &str) -> String {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(2)..(k + 3).min(ops.len())]
            .iter()
            .any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut gap = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            if gap && !out.is_empty() {
                out.push_str("  …\n");
            }
            gap = false;
            out.push_str(&format!("{c} {line}\n"));
        } else {
            gap = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_differs_is_shown_with_context() {
        let ours = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\n";
        let theirs = "a = 1\nb = 2\nc = 3\nd = 40\ne = 5\nf = 6\ng = 7\nh = 8\n";
        assert_eq!(
            diff(ours, theirs),
            "  b = 2\n  c = 3\n- d = 4\n+ d = 40\n  e = 5\n  f = 6\n  g = 7\n+ h = 8\n"
        );
        assert_eq!(diff(ours, ours), "");
    }
}
