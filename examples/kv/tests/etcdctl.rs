//! `raft-kv serve` clusters (real processes) driven by the real `etcdctl` 3.4 (Debian's
//! `etcd-client`): the KV, Txn, Cluster and Maintenance calls etcdctl makes, a leader killed with
//! SIGKILL and restarted (TESTING.md scenarios 3, 11), membership changes with `etcdctl member`
//! (scenario 21), and `etcdctl check perf --load=s`.
//!
//! These tests fail when `etcdctl` is not on PATH, unless `RAFT_KV_SKIP_ETCDCTL=1` is set. No
//! assertion depends on timing: conditions are polled for at most [`common::WAIT`].

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    CTL_LIMIT, Cluster, WAIT, ctl, ctl_in, ctl_json, ctl_retry, endpoint_status, etcdctl,
    have_etcdctl, http_get, machine_exclusive, machine_shared, parse_json, wait_for,
};

/// `put key value -w json`; returns the revision of the write.
fn put(endpoints: &str, key: &str, value: &str) -> i64 {
    let json = ctl_json(endpoints, &["put", key, value]);
    json["header"]["revision"].as_i64().unwrap()
}

/// The lines etcdctl prints for key-value pairs (`key\nvalue\n` each).
fn kv_lines(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect()
}

#[test]
fn kv_txn_cluster_and_maintenance_calls() {
    if !have_etcdctl("kv_txn_cluster_and_maintenance_calls") {
        return;
    }
    let _machine = machine_shared();
    let cluster = Cluster::start("basic", 3);
    let all = cluster.endpoints(&[0, 1, 2]);

    // Put, get, get at an older revision, range and prefix gets.
    let created = put(&all, "foo", "bar");
    assert_eq!(ctl(&all, &["put", "foo2", "baz"]), "OK\n");
    assert_eq!(ctl(&all, &["put", "fop", "x"]), "OK\n");
    let modified = put(&all, "foo", "bar2");
    assert_eq!(modified, created + 3);
    assert_eq!(ctl(&all, &["get", "foo"]), kv_lines(&[("foo", "bar2")]));
    assert_eq!(ctl(&all, &["get", "foo", "--print-value-only"]), "bar2\n");
    assert_eq!(
        ctl(&all, &["get", "foo", &format!("--rev={created}")]),
        kv_lines(&[("foo", "bar")])
    );
    assert_eq!(ctl(&all, &["get", "foo", &format!("--rev={}", created - 1)]), "");
    assert_eq!(ctl(&all, &["get", "nothing"]), "");
    assert_eq!(
        ctl(&all, &["get", "--prefix", "foo"]),
        kv_lines(&[("foo", "bar2"), ("foo2", "baz")])
    );
    assert_eq!(ctl(&all, &["get", "--prefix", "fo", "--keys-only"]), "foo\n\nfoo2\n\nfop\n\n");
    assert_eq!(ctl(&all, &["get", "--prefix", "foo", "--limit=1"]), kv_lines(&[("foo", "bar2")]));
    assert_eq!(ctl(&all, &["get", "foo", "fop"]), kv_lines(&[("foo", "bar2"), ("foo2", "baz")]));
    assert_eq!(
        ctl(&all, &["get", "--prefix", "fo", &format!("--rev={created}")]),
        kv_lines(&[("foo", "bar")])
    );
    let limited = ctl_json(&all, &["get", "--prefix", "fo", "--limit=2"]);
    assert_eq!(limited["count"], 3, "{limited}");
    assert_eq!(limited["more"], true, "{limited}");
    assert_eq!(limited["kvs"].as_array().unwrap().len(), 2, "{limited}");
    let foo = ctl_json(&all, &["get", "foo"]);
    let kv = &foo["kvs"][0];
    assert_eq!(kv["key"], "Zm9v", "{foo}"); // base64("foo")
    assert_eq!(kv["value"], "YmFyMg==", "{foo}"); // base64("bar2")
    assert_eq!(kv["create_revision"], created, "{foo}");
    assert_eq!(kv["mod_revision"], modified, "{foo}");
    assert_eq!(kv["version"], 2, "{foo}");
    assert_eq!(foo["header"]["revision"], modified, "{foo}");

    // Delete.
    assert_eq!(ctl(&all, &["del", "foo2"]), "1\n");
    assert_eq!(ctl(&all, &["del", "foo2"]), "0\n");
    assert_eq!(ctl(&all, &["get", "foo2"]), "");
    assert_eq!(ctl(&all, &["put", "gone/a", "1"]), "OK\n");
    assert_eq!(ctl(&all, &["put", "gone/b", "2"]), "OK\n");
    assert_eq!(ctl(&all, &["del", "--prefix", "gone/", "--prev-kv"]), "2\ngone/a\n1\ngone/b\n2\n");
    assert_eq!(ctl(&all, &["get", "--prefix", "gone/"]), "");

    // Txn, success branch: every kind of compare holds.
    let txn = format!(
        "value(\"foo\") = \"bar2\"\nversion(\"foo\") = \"2\"\ncreate(\"foo\") = \"{created}\"\n\
         mod(\"foo\") = \"{modified}\"\n\nput foo won\nget fop\n\nput foo lost\n\n"
    );
    assert_eq!(ctl_in(&all, &["txn"], Some(&txn)), "SUCCESS\n\nOK\n\nfop\nx\n");
    assert_eq!(ctl(&all, &["get", "foo", "--print-value-only"]), "won\n");
    let won = ctl_json(&all, &["get", "foo"]);
    let won_revision = won["kvs"][0]["mod_revision"].as_i64().unwrap();
    assert_eq!(won["kvs"][0]["version"], 3, "{won}");

    // Txn, failure branch: each kind of compare fails in turn, and so do `<` and `>`.
    for compare in [
        "value(\"foo\") = \"bar2\"".to_string(),
        "version(\"foo\") = \"2\"".to_string(),
        format!("create(\"foo\") > \"{created}\""),
        format!("mod(\"foo\") < \"{won_revision}\""),
        "version(\"foo\") > \"3\"".to_string(),
    ] {
        let txn = format!("{compare}\n\nput foo lost\n\nget foo\n\n");
        let out = ctl_in(&all, &["txn"], Some(&txn));
        assert_eq!(out, "FAILURE\n\nfoo\nwon\n", "compare {compare}");
    }
    // A failure branch that writes, seen as JSON.
    let txn = "value(\"foo\") = \"nope\"\n\nput foo lost\n\nput foo failed\nget foo\n\n";
    let json = parse_json(&ctl_in(&all, &["txn", "-w", "json"], Some(txn)));
    assert_ne!(json["succeeded"], true, "{json}");
    let responses = json["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 2, "{json}");
    assert!(responses[0]["Response"]["ResponsePut"].is_object(), "{json}");
    let got = &responses[1]["Response"]["ResponseRange"]["kvs"][0];
    assert_eq!(got["value"], "ZmFpbGVk", "{json}"); // base64("failed")
    assert_eq!(got["version"], 4, "{json}");
    let last_revision = json["header"]["revision"].as_i64().unwrap();
    assert_eq!(got["mod_revision"], last_revision, "{json}");

    // member list: the three members, etcd's ids, names and URLs, none a learner.
    let mut want: Vec<(u64, String)> = (0..3)
        .map(|i| {
            let m = &cluster.members[i];
            let id = cluster.initial_member_id(i);
            (id, format!("{id:x}, started, {}, {}, {}, false", m.name, m.peer_url, m.client_url))
        })
        .collect();
    want.sort();
    let want: String = want.iter().map(|(_, line)| format!("{line}\n")).collect();
    for i in 0..3 {
        assert_eq!(ctl(&cluster.endpoints(&[i]), &["member", "list"]), want);
    }

    // endpoint status: one leader, one term, every member at the last revision.
    let ids: Vec<u64> = (0..3).map(|i| cluster.initial_member_id(i)).collect();
    let statuses = wait_for("every member applied the last write", WAIT, || {
        let statuses = endpoint_status(&all)?;
        if statuses.iter().all(|s| s.revision == last_revision) {
            Ok(statuses)
        } else {
            Err(format!("{statuses:?}"))
        }
    });
    let leader = statuses[0].leader;
    assert!(ids.contains(&leader), "{statuses:?}");
    for (i, s) in statuses.iter().enumerate() {
        assert_eq!(s.endpoint, cluster.members[i].endpoint());
        assert_eq!(s.member_id, ids[i], "{statuses:?}");
        assert_eq!((s.leader, s.raft_term), (leader, statuses[0].raft_term), "{statuses:?}");
    }

    // endpoint health: every member healthy.
    let health = ctl_json(&all, &["endpoint", "health"]);
    let mut healthy: Vec<(String, bool)> = health
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["endpoint"].as_str().unwrap().to_string(), h["health"] == true))
        .collect();
    healthy.sort();
    let mut want: Vec<(String, bool)> =
        cluster.members.iter().map(|m| (m.endpoint(), true)).collect();
    want.sort();
    assert_eq!(healthy, want, "{health}");

    // --listen-metrics-urls: etcd's /health and Prometheus metrics under etcd's names.
    let mut leaders = 0;
    for m in &cluster.members {
        let (code, body) = http_get(&m.metrics_url, "/health");
        assert_eq!((code, body.as_str()), (200, r#"{"health":"true"}"#), "{}", m.name);
        let (code, metrics) = http_get(&m.metrics_url, "/metrics");
        assert_eq!(code, 200, "{metrics}");
        let value = |name: &str| -> i64 {
            let value = metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
            value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}: {metrics}"))
        };
        assert_eq!(value("etcd_server_has_leader"), 1, "{metrics}");
        assert_eq!(value("etcd_debugging_mvcc_current_revision"), last_revision, "{metrics}");
        leaders += value("etcd_server_is_leader");
        // The library's `raft_*` families follow (histograms too), no family named twice.
        assert!(metrics.lines().any(|l| l == "# TYPE raft_fsync_seconds histogram"), "{metrics}");
        assert!(metrics.contains("\nraft_fsync_seconds_count{node=\""), "{metrics}");
        let mut families: Vec<&str> =
            metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let declared = families.len();
        families.sort_unstable();
        families.dedup();
        assert_eq!(families.len(), declared, "a family declared twice: {metrics}");
    }
    assert_eq!(leaders, 1, "exactly one member reports itself leader");
    assert_eq!(http_get(&cluster.members[0].metrics_url, "/nothing").0, 404);

    // The same with endpoints written as URLs (as etcd's docs do): etcd's Go client then sends
    // the whole URL as the HTTP/2 :authority, which h2 refused before vendor/h2's patch.
    let urls: Vec<&str> = cluster.members.iter().map(|m| m.client_url.as_str()).collect();
    let urls = urls.join(",");
    assert!(urls.starts_with("http://"), "{urls}");
    let statuses = endpoint_status(&urls).expect("endpoint status with http:// endpoints");
    assert!(statuses.iter().all(|s| s.leader == leader), "{statuses:?}");
    let health = ctl_json(&urls, &["endpoint", "health"]);
    let healthy = health.as_array().unwrap().iter().filter(|h| h["health"] == true).count();
    assert_eq!(healthy, 3, "{health}");

    // Watch, lease and auth answer Unimplemented at once (never a hang).
    let unimplemented = [
        (vec!["watch", "foo"], "watch API (etcdserverpb.Watch)"),
        (vec!["lease", "grant", "10"], "lease API (etcdserverpb.Lease)"),
        (vec!["user", "list"], "auth API (etcdserverpb.Auth)"),
    ];
    for (args, api) in unimplemented {
        let out = etcdctl(&all, &args, None, Duration::from_secs(20));
        assert!(out.status.is_some(), "etcdctl {args:?} hung: {out:?}");
        assert!(!out.success(), "etcdctl {args:?} succeeded: {out:?}");
        let want = format!("code = Unimplemented desc = raft-kv does not implement etcd's {api}");
        assert!(out.stderr.contains(&want), "etcdctl {args:?}: {out:?}");
    }
    // The cluster still works.
    assert_eq!(ctl(&all, &["get", "foo", "--print-value-only"]), "failed\n");
}

#[test]
fn leader_killed_then_restarted_catches_up() {
    if !have_etcdctl("leader_killed_then_restarted_catches_up") {
        return;
    }
    let _machine = machine_shared();
    let mut cluster = Cluster::start("kill", 3);
    let all = cluster.endpoints(&[0, 1, 2]);
    assert_eq!(ctl(&all, &["put", "before", "kill"]), "OK\n");

    let statuses = cluster.wait_ready(&[0, 1, 2]);
    let (old_leader, old_term) = (statuses[0].leader, statuses[0].raft_term);
    let killed = cluster.index_of(&statuses, old_leader);
    cluster.kill(killed);
    let rest: Vec<usize> = (0..3).filter(|&i| i != killed).collect();
    let rest_endpoints = cluster.endpoints(&rest);

    // Keep writing and reading through the other two; a call may fail while they elect.
    let mut acked = BTreeMap::new();
    for n in 0..20 {
        let (key, value) = (format!("k/{n:02}"), format!("v{n}"));
        assert_eq!(ctl_retry(&rest_endpoints, &["put", &key, &value]), "OK\n");
        assert_eq!(ctl_retry(&rest_endpoints, &["put", "latest", &value]), "OK\n");
        acked.insert(key.clone(), value.clone());
        // Read it back through each survivor alone (linearizable).
        let one = cluster.endpoints(&[rest[n % 2]]);
        let got = ctl_retry(&one, &["get", &key, "--print-value-only"]);
        assert_eq!(got, format!("{value}\n"), "{key} through {one}");
    }

    // A new leader among the survivors, in a later term.
    let statuses = wait_for("survivors agree on a new leader", WAIT, || {
        let statuses = endpoint_status(&rest_endpoints)?;
        let leader = statuses[0].leader;
        let agreed =
            statuses.iter().all(|s| s.leader == leader && s.raft_term == statuses[0].raft_term);
        if agreed && leader != 0 { Ok(statuses) } else { Err(format!("{statuses:?}")) }
    });
    assert_ne!(statuses[0].leader, old_leader, "{statuses:?}");
    assert!(statuses[0].raft_term > old_term, "{statuses:?}");

    // Every acknowledged write is readable through either survivor.
    let want: String = acked.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect();
    for &i in &rest {
        assert_eq!(ctl(&cluster.endpoints(&[i]), &["get", "--prefix", "k/"]), want);
    }

    // Restart the killed member with the same flags and data: it catches up.
    cluster.spawn(killed);
    let restarted = cluster.endpoints(&[killed]);
    wait_for("restarted member serves the latest value", WAIT, || {
        let out = etcdctl(
            &restarted,
            &["get", "latest", "--print-value-only", "--consistency=s"],
            None,
            CTL_LIMIT,
        );
        if out.success() && out.stdout == "v19\n" { Ok(()) } else { Err(format!("{out:?}")) }
    });
    let mut everything = acked.clone();
    everything.insert("before".to_string(), "kill".to_string());
    everything.insert("latest".to_string(), "v19".to_string());
    let want_all: String = everything.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect();
    let got = ctl(&restarted, &["get", "", "--from-key", "--consistency=s"]);
    assert_eq!(got, want_all);
    assert!(cluster.running(killed));

    // The three agree again, and the restarted member takes writes.
    cluster.wait_ready(&[0, 1, 2]);
    assert_eq!(ctl_retry(&restarted, &["put", "after", "restart"]), "OK\n");
    for i in 0..3 {
        let one = cluster.endpoints(&[i]);
        assert_eq!(ctl(&one, &["get", "after", "--print-value-only"]), "restart\n");
    }
}

/// `member add` output: the new member's id in hex and the `ETCD_INITIAL_CLUSTER` it prints.
fn parse_member_add(out: &str, name: &str, peer_url: &str) -> (String, String) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        (words.len(), words[0], words[2], words[3], words[4]),
        (6, "Member", "added", "to", "cluster"),
        "{out}"
    );
    assert_eq!(lines[1], "");
    assert_eq!(lines[2], format!("ETCD_NAME=\"{name}\""));
    let initial_cluster = lines[3]
        .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(lines[4], format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer_url}\""));
    assert_eq!(lines[5], "ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
    (words[1].to_string(), initial_cluster.to_string())
}

/// `member list` as a map from hex id to the rest of each line.
fn member_list(endpoints: &str) -> BTreeMap<String, String> {
    ctl_retry(endpoints, &["member", "list"])
        .lines()
        .map(|l| {
            let (id, rest) = l.split_once(", ").unwrap();
            (id.to_string(), rest.to_string())
        })
        .collect()
}

#[test]
fn members_added_promoted_and_removed() {
    if !have_etcdctl("members_added_promoted_and_removed") {
        return;
    }
    let _machine = machine_shared();
    let mut cluster = Cluster::start("members", 3);
    let first3 = cluster.endpoints(&[0, 1, 2]);
    assert_eq!(ctl(&first3, &["put", "seed", "1"]), "OK\n");

    // Add infra4 as a voter: a learner until it has caught up, then promoted by the leader.
    let (client4, peer4) = Cluster::new_urls();
    let out = ctl(&first3, &["member", "add", "infra4", &format!("--peer-urls={peer4}")]);
    let (id4, initial_cluster) = parse_member_add(&out, "infra4", &peer4);
    let mut want_cluster: Vec<String> =
        cluster.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
    want_cluster.push(format!("infra4={peer4}"));
    want_cluster.sort();
    let mut got_cluster: Vec<&str> = initial_cluster.split(',').collect();
    got_cluster.sort();
    assert_eq!(got_cluster, want_cluster);
    assert_eq!(member_list(&first3)[&id4], format!("unstarted, , {peer4}, , true"));

    let four = cluster.join("infra4", &client4, &peer4, &initial_cluster);
    let want4 = format!("started, infra4, {peer4}, {client4}, false");
    wait_for("infra4 started and promoted", WAIT, || {
        let list = member_list(&first3);
        if list.get(&id4) == Some(&want4) { Ok(()) } else { Err(format!("{list:?}")) }
    });
    let only4 = cluster.endpoints(&[four]);
    assert_eq!(ctl(&only4, &["get", "seed", "--print-value-only"]), "1\n");
    assert_eq!(ctl(&only4, &["put", "via", "infra4"]), "OK\n");
    assert_eq!(ctl(&first3, &["get", "via", "--print-value-only"]), "infra4\n");
    let list = member_list(&only4);
    assert_eq!(list.len(), 4, "{list:?}");
    assert!(
        list.values().all(|m| m.starts_with("started, ") && m.ends_with(", false")),
        "{list:?}"
    );

    // Remove a follower (not infra4): it stops by itself.
    let members = [0, 1, 2, four];
    let statuses = cluster.wait_ready(&members);
    let follower = statuses[..3].iter().find(|s| s.member_id != s.leader).unwrap();
    let removed = cluster.index_of(&statuses, follower.member_id);
    let left = remove_member(&mut cluster, &members, removed);
    let left_endpoints = cluster.endpoints(&left);
    assert_eq!(ctl(&left_endpoints, &["put", "after", "remove"]), "OK\n");

    // Add infra5 as a learner: it catches up but stays a learner until promoted.
    let (client5, peer5) = Cluster::new_urls();
    let args = ["member", "add", "infra5", "--learner", &format!("--peer-urls={peer5}")];
    let out = ctl(&left_endpoints, &args);
    let (id5, initial_cluster) = parse_member_add(&out, "infra5", &peer5);
    assert_eq!(initial_cluster.split(',').count(), 4, "{initial_cluster}");
    assert_eq!(member_list(&left_endpoints)[&id5], format!("unstarted, , {peer5}, , true"));
    let five = cluster.join("infra5", &client5, &peer5, &initial_cluster);
    let only5 = cluster.endpoints(&[five]);
    wait_for("learner infra5 caught up", WAIT, || {
        let out = etcdctl(&only5, &["get", "after", "--consistency=s"], None, CTL_LIMIT);
        if out.stdout == "after\nremove\n" { Ok(()) } else { Err(format!("{out:?}")) }
    });
    let want5 = format!("started, infra5, {peer5}, {client5}, true");
    wait_for("infra5 started as a learner", WAIT, || {
        let list = member_list(&left_endpoints);
        if list.get(&id5) == Some(&want5) { Ok(()) } else { Err(format!("{list:?}")) }
    });
    // Promote it (refused while the learner lags: retried).
    let out = ctl_retry(&left_endpoints, &["member", "promote", &id5]);
    assert!(out.starts_with(&format!("Member {id5:>16} promoted in cluster ")), "{out}");
    let list = member_list(&left_endpoints);
    assert_eq!(list[&id5], format!("started, infra5, {peer5}, {client5}, false"));
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(ctl(&only5, &["put", "via", "infra5"]), "OK\n");

    // Remove the leader (TESTING.md scenario 22): it stops, the other three go on.
    let mut members = left.clone();
    members.push(five);
    let statuses = cluster.wait_ready(&members);
    let leader = cluster.index_of(&statuses, statuses[0].leader);
    let left = remove_member(&mut cluster, &members, leader);
    // A new leader among the three (wait_ready checks the leader is one of them).
    cluster.wait_ready(&left);
    for &i in &left {
        let one = cluster.endpoints(&[i]);
        assert_eq!(ctl_retry(&one, &["put", &format!("via{i}"), "last"]), "OK\n");
        assert_eq!(ctl(&one, &["get", "via", "--print-value-only"]), "infra5\n");
    }
}

/// `etcdctl member remove` of member `removed` (one of `members`, which all run): its process
/// exits by itself with status 0, and `member list` shows exactly the others. Returns them.
fn remove_member(cluster: &mut Cluster, members: &[usize], removed: usize) -> Vec<usize> {
    let statuses = endpoint_status(&cluster.endpoints(&[removed])).unwrap();
    let removed_id = format!("{:x}", statuses[0].member_id);
    let left: Vec<usize> = members.iter().copied().filter(|&i| i != removed).collect();
    let left_endpoints = cluster.endpoints(&left);
    let out = ctl(&left_endpoints, &["member", "remove", &removed_id]);
    // etcdctl prints ids as `%16x`: padded with spaces.
    assert!(out.starts_with(&format!("Member {removed_id:>16} removed from cluster ")), "{out}");
    let status = cluster.wait_exit(removed);
    assert!(status.success(), "removed member exited with {status}");
    let mut want: Vec<String> = left
        .iter()
        .map(|&i| {
            let m = &cluster.members[i];
            format!("started, {}, {}, {}, false", m.name, m.peer_url, m.client_url)
        })
        .collect();
    want.sort();
    let list = member_list(&left_endpoints);
    let mut got: Vec<String> = list.values().cloned().collect();
    got.sort();
    assert_eq!(got, want, "{list:?}");
    assert!(!list.contains_key(&removed_id), "{list:?}");
    left
}

#[test]
fn check_perf_small_load_passes() {
    if !have_etcdctl("check_perf_small_load_passes") {
        return;
    }
    let _machine = machine_exclusive();
    let cluster = Cluster::start("perf", 3);
    let all = cluster.endpoints(&[0, 1, 2]);
    // etcdctl runs the load for 60 s.
    let out = etcdctl(&all, &["check", "perf", "--load=s"], None, Duration::from_secs(180));
    eprintln!("etcdctl check perf --load=s:\n{}{}", out.stdout, out.stderr);
    assert!(out.success(), "check perf failed: {out:?}");
    assert!(out.stdout.contains("PASS"), "{out:?}");
    assert!(!out.stdout.contains("FAIL"), "{out:?}");
    // It cleans up after itself.
    assert_eq!(ctl(&all, &["get", "--prefix", "/etcdctl-check-perf/", "--keys-only"]), "");
}
