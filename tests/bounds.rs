//! What one Docker user can make the shared plugin hold, against a real OpenBao over the
//! plugin's socket (issue 21): a volume over the bounds is refused at create, and a record
//! store filled by one user's mounts never makes another user's mount run unrecorded.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::*;

#[test]
fn a_volume_over_the_source_or_request_bounds_is_refused_at_create() {
    let bao = Bao::start();
    let plugin = Plugin::start(None, &bao.address(), &bao.token, "");
    let sources = |n: usize, refresh: &str| {
        let mut opts: serde_json::Map<String, serde_json::Value> =
            (0..n).map(|i| (format!("path.{i:064}"), json!("secret/data/app"))).collect();
        opts.insert("refresh".into(), json!(refresh));
        serde_json::Value::Object(opts)
    };
    // The review's volume: 706 sources of 64-character names.
    let e = plugin.err("/VolumeDriver.Create", json!({"Name": "hog", "Opts": sources(706, "5m")}));
    assert!(e.contains("706 sources given; a volume reads at most 64"), "{e}");
    let e = plugin.err("/VolumeDriver.Create", json!({"Name": "hog", "Opts": sources(65, "0")}));
    assert!(e.contains("at most 64"), "{e}");
    // 1,900 sources at refresh=1s made 7,600 reads in 10 s; now 11 at 1s is already too many.
    let e = plugin.err("/VolumeDriver.Create", json!({"Name": "fast", "Opts": sources(11, "1s")}));
    assert!(e.contains("option `refresh`") && e.contains("at most 10 are allowed"), "{e}");
    let (status, list) = plugin.call("/VolumeDriver.List", Some(json!({}))).unwrap();
    assert_eq!((status, list["Volumes"].as_array().map(Vec::len)), (200, Some(0)), "{list}");
    plugin.create("ok", sources(64, "7s"));
}

/// The accessors created since `before`.
fn new_accessors(bao: &Bao, before: &[String]) -> Vec<String> {
    bao.accessors().into_iter().filter(|a| !before.contains(a)).collect()
}

fn recorded(plugin: &Plugin, volume: &str, id: &str) -> bool {
    plugin.runtime.join("private/mounts").join(format!("{volume}@{id}.json")).exists()
}

#[test]
fn a_record_store_filled_by_one_user_never_lets_another_users_mount_run_unrecorded() {
    let bao = Bao::start();
    bao.put_kv2("app", json!({"password": "s3cr3t", "user": "app"}));
    // A private tmpfs of 256 KiB: users' records may take 192 KiB, 48 pages, so that the test
    // fills it in a few dozen mounts (the default, 64 MiB, takes thousands).
    let mut plugin = Plugin::configure(None, &bao.address(), &bao.token, "");
    plugin.env.push(("VAULT_SECRETS_PRIVATE_SIZE".into(), (256 * 1024).to_string()));
    plugin.restart();
    plugin.create("hog", json!({"path": "secret/data/app", "size": "16k"}));
    plugin.create("victim", json!({"path": "secret/data/app", "size": "16k"}));

    // The attacker mounts until the store refuses.
    let mut hogs = Vec::new();
    let refused = loop {
        assert!(hogs.len() < 100, "the store never filled: {} mounts recorded", hogs.len());
        let id = format!("hog{:03}", hogs.len());
        let (_, v) =
            plugin.call("/VolumeDriver.Mount", Some(json!({"Name": "hog", "ID": id}))).unwrap();
        match v["Err"].as_str().filter(|e| !e.is_empty()) {
            Some(e) => break e.to_owned(),
            None => hogs.push(id),
        }
    };
    assert!(refused.contains("no room to record") && refused.contains("196608 bytes"), "{refused}");
    assert!((40..=48).contains(&hogs.len()), "{} mounts filled 192 KiB", hogs.len());

    // The victim's mount fails cleanly: no token left, nothing mounted, nothing unrecorded.
    let before = bao.accessors();
    let victim = mount_id();
    let e = plugin.err("/VolumeDriver.Mount", json!({"Name": "victim", "ID": victim}));
    assert!(e.contains("cannot record the mount of volume victim, so it does not run"), "{e}");
    assert!(new_accessors(&bao, &before).is_empty(), "the refused mount's token is revoked");
    assert!(!plugin.mounts_left().iter().any(|m| m.contains("/victim/")), "nothing left mounted");
    assert!(plugin.log().contains("the private tmpfs is filling"), "a filling store is logged");

    // Once one of the attacker's containers stops, the victim's mount runs, recorded, and
    // its token is revoked at its Unmount after a restart of the plugin.
    plugin.unmount("hog", &hogs.pop().unwrap());
    let mp = plugin.mount("victim", &victim);
    assert_eq!(std::fs::read_to_string(mp.join("password")).unwrap(), "s3cr3t");
    assert!(recorded(&plugin, "victim", &victim), "the victim's mount is recorded");
    let token = new_accessors(&bao, &before);
    assert_eq!(token.len(), 1, "one token for the victim's mount");
    plugin.stop(false);
    plugin.restart();
    plugin.unmount("victim", &victim);
    assert!(
        wait_until(Duration::from_secs(10), || !bao.accessors().contains(&token[0])),
        "the victim's token is revoked at its Unmount after the restart"
    );
    assert!(!Path::new(&mp).exists());
    for id in &hogs {
        plugin.unmount("hog", id);
    }
    assert!(plugin.mounts_left().is_empty(), "{:?}", plugin.mounts_left());
}
