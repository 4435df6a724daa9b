//! Volume snapshots before changes that put data at risk (issue 23):
//! taken through the engine from the service's own container, verified,
//! restored only on request, and never at the cost of a full disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Stack, docker};

/// The known content of the volume: a few files, a subdirectory, an owner
/// other than root, and a megabyte that does not compress.
const FILL: &str = "echo known > /data/file && mkdir -p /data/sub && echo deep > /data/sub/x \
                    && chown 999:999 /data/sub/x && chmod 600 /data/sub/x \
                    && dd if=/dev/urandom of=/data/noise bs=1024 count=1024 2>/dev/null";

fn manifest(stack: &Stack, revision: u64) -> (PathBuf, Value) {
    let dir = stack.state.join(&stack.name).join("volumes").join(format!("rev-{revision}"));
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
    (dir, serde_json::from_str(&text).unwrap())
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// `ls -la` of the volume's own directory on the engine's host: the data
/// and anything clusterup put beside it.
fn beside_volume(volume: &str) -> Vec<String> {
    let out = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", volume]);
    let data = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let mut names: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_renamed_service_is_snapshot_first_and_its_data_restored_only_on_request() {
    let mut stack = Stack::new("volsnap");
    let (web, cache) = (stack.image("web"), stack.image("cache"));
    stack.publish("v1", &web);
    stack.publish("v1", &cache);
    let labels = "    labels:\n      clusterup.backup-volumes: \"true\"\n";
    let cache_service = |env: &str| format!("  cache:\n    image: {cache}\n    volumes: [scratch:/scratch]\n{env}");
    let volumes = "volumes:\n  data: {}\n  scratch: {}\n";
    stack.write_compose(&format!(
        "services:\n  api:\n    image: {web}\n{labels}    volumes: [data:/data]\n{}{volumes}",
        cache_service("")
    ));
    stack.write_config("");
    stack.up();
    stack.exec("api", FILL);
    stack.exec("cache", "echo not-mine > /scratch/file");
    let volume = format!("{}_data", stack.name);

    // The rename, and a change to cache (which did not opt in), together.
    stack.write_compose(&format!(
        "services:\n  backend:\n    image: {web}\n{labels}    volumes: [data:/data]\n{}{volumes}",
        cache_service("    environment: [MODE=2]\n")
    ));
    let check = stack.clusterup(&["check", "--only"]);
    assert!(check.stdout.contains("volume snapshots first (backup_volumes): api\n"), "{check:?}");
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.all().contains("stopping api to copy its volumes"), "stop-first: stopped for the copy: {run:?}");
    let (dir, m) = manifest(&stack, 1);
    let copied: Vec<&str> = m["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(copied, [volume.as_str()], "cache did not opt in and is never copied: {m}");
    let v = &m["volumes"][0];
    assert_eq!((v["service"].as_str(), v["quiesced"].as_str()), (Some("api"), Some("stopped")), "{m}");
    let file = dir.join(v["file"].as_str().unwrap());
    assert_eq!(v["sha256"].as_str().unwrap(), sha256sum(&file), "the manifest's checksum is the file's");
    assert!(v["bytes"].as_u64().unwrap() > 1 << 20, "the whole megabyte is in it: {m}");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("known"), "the data is intact after the rename");
    assert_eq!(stack.health("backend"), "running/healthy");

    // By hand, without clusterup: the README's restore reads it.
    let listed = Command::new("tar").arg("-tzf").arg(&file).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).lines().any(|l| l == "data/sub/x"), "{listed:?}");

    let status = stack.clusterup(&["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let snapshots = &status.json()["snapshots"];
    assert_eq!(snapshots[0]["revision"], 1, "{status:?}");
    assert_eq!(snapshots[0]["volumes"][0]["bytes"], v["bytes"], "{status:?}");
    let status = stack.clusterup(&["status"]);
    assert!(status.stdout.contains("volume snapshots in") && status.stdout.contains(&volume), "{status:?}");

    stack.exec("backend", "echo garbage > /data/file && rm /data/sub/x && echo new > /data/extra");
    // A plain rollback never touches data, and says a snapshot exists.
    let dry = stack.clusterup(&["rollback", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(dry.stdout.contains("revision 1 has volume snapshots"), "{dry:?}");
    assert!(dry.stdout.contains("--restore-volumes restores them"), "{dry:?}");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("garbage"));

    let backend = stack.container_id("backend");
    let run = stack.clusterup(&["rollback", "--to", "1", "--restore-volumes", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("known"), "{run:?}");
    assert_eq!(stack.volume_file("data", "sub/x").as_deref(), Some("deep"));
    assert_eq!(stack.volume_file("data", "extra"), None, "the volume holds the snapshot, nothing since");
    let owner = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/v"),
        "clusterup-fixture/web:v1",
        "stat",
        "-c",
        "%u %a",
        "/v/sub/x",
    ]);
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "999 600", "owner and mode as they were");
    assert_eq!(stack.health("backend"), "running/healthy");
    assert_eq!(stack.container_id("backend"), backend, "started again, not recreated: its files did not change");
    assert_eq!(beside_volume(&volume), ["_data"], "the old content went once the service was healthy");
    assert_eq!(stack.volume_file("scratch", "file").as_deref(), Some("not-mine"), "cache's volume untouched");
    assert!(!manifest(&stack, 1).1["volumes"].as_array().unwrap().is_empty(), "the snapshot stays for next time");
}

/// `web` with the named volume `data`, filled by `script`, running with
/// `backup_volumes: true`; `svc(extra)` is its compose file with `extra`
/// added to the service.
fn web_with_data(test: &str, script: &str) -> (Stack, impl Fn(&str) -> String + use<>) {
    let mut stack = Stack::new(test);
    let web = stack.image("web");
    stack.publish("v1", &web);
    let svc = move |extra: &str| {
        format!("services:\n  web:\n    image: {web}\n    volumes: [data:/data]\n{extra}volumes:\n  data: {{}}\n")
    };
    stack.write_compose(&svc(""));
    stack.write_config("    backup_volumes: true\n");
    stack.up();
    stack.exec("web", script);
    (stack, svc)
}

/// The restored data fails the service's health check: the data it had
/// goes back in, and the run says it failed. The snapshot holds a file
/// the service's check refuses (a pre-update hook removed it before the
/// revision's recreate, after the snapshot): only the restore brings it
/// back, and a hook cannot answer for a service stopped for the swap.
#[test]
fn a_restore_the_service_fails_on_is_undone() {
    let (stack, svc) = web_with_data("volundo", "echo first > /data/file && touch /data/poison");
    let refuses_poison = "    labels:\n      clusterup.pre-update: rm -f /data/poison\n    healthcheck:\n      \
                          test: [\"CMD\", \"sh\", \"-c\", \"test ! -e /data/poison\"]\n      interval: 1s\n      retries: 2\n";
    stack.write_compose(&svc(refuses_poison));
    let run = stack.clusterup(&["apply", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(stack.volume_file("data", "poison"), None, "the hook removed it after the snapshot");
    stack.exec("web", "echo after > /data/file");

    let run = stack.clusterup(&["rollback", "--to", "1", "--restore-volumes", "--yes"]);
    assert_eq!(run.code, 1, "the restored data fails the health check: {run:?}");
    assert!(run.all().contains("pre-update hooks are not run"), "{run:?}");
    assert!(run.all().contains("the volumes hold what they held before the restore"), "{run:?}");
    assert_eq!(stack.volume_file("data", "file").as_deref(), Some("after"), "the data before the restore is back");
    assert_eq!(stack.volume_file("data", "poison"), None);
    assert_eq!(stack.health("web"), "running/healthy");
    assert_eq!(beside_volume(&format!("{}_data", stack.name)), ["_data"], "nothing left beside the volume");
}

/// A restore killed right after the swap (its services stopped) is undone
/// by the next run; one killed after its service came back healthy on the
/// restored data is completed, and what was moved aside goes.
#[test]
fn a_restore_cut_short_is_undone_or_completed_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    for (stage, kept) in [("swapped", "after"), ("recreated", "first")] {
        let (stack, svc) = web_with_data(&format!("volcrash{}", &stage[..4]), "echo first > /data/file");
        stack.write_compose(&svc("    environment: [MODE=2]\n"));
        assert_eq!(stack.clusterup(&["apply", "--yes"]).code, 0);
        stack.exec("web", "echo after > /data/file");

        let args = ["rollback", "--to", "1", "--restore-volumes", "--yes"];
        let out = stack.clusterup_command(&stack.dir, &args).env("CLUSTERUP_CRASH_AT", stage).output().unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "the run must have died at {stage}: {out:?}");

        let run = stack.clusterup(&["apply", "--auto"]);
        assert_eq!(run.code, 0, "{stage}: {run:?}");
        assert!(run.stdout.contains("recovered interrupted revision 2"), "{run:?}");
        assert_eq!(stack.volume_file("data", "file").as_deref(), Some(kept), "{stage}: {run:?}");
        assert_eq!(stack.health("web"), "running/healthy", "{stage}");
        assert_eq!(beside_volume(&format!("{}_data", stack.name)), ["_data"], "{stage}: nothing left beside it");
    }
}

/// A tmpfs too small for the snapshot: unmounted when the test ends.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn new(dir: PathBuf, size: &str) -> SmallDisk {
        std::fs::create_dir_all(&dir).unwrap();
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).output();
        let out = out.expect("running mount");
        assert!(out.status.success(), "this test needs root to mount a small tmpfs: {out:?}");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_backup_disk_holds_the_revision_back_and_changes_nothing() {
    let (mut stack, web) = Stack::web_running("volfull", |s| s.image("web"));
    for dir in ["uploads", "other"] {
        std::fs::create_dir_all(stack.dir.join(dir)).unwrap();
        std::fs::write(stack.dir.join(dir).join("f"), dir).unwrap();
    }
    stack.write_compose(&format!(
        "services:\n  web:\n    image: {web}\n    volumes: [data:/data, ./uploads:/uploads, ./other:/other]\n\
         volumes:\n  data: {{}}\n"
    ));
    stack.up();
    // 30 MB of data, 64 MB kept free beside it: 80 MB is too small, and
    // would not be if the data were not measured.
    stack.exec("web", "dd if=/dev/urandom of=/data/noise bs=1048576 count=30 2>/dev/null");
    stack.publish("v2", &web);
    let disk = SmallDisk::new(stack.scratch("backups"), "80m");
    stack.write_config(&format!(
        "    backup_dir: {}\n    services:\n      web:\n        backup_volumes: true\n",
        disk.0.display()
    ));
    let before = stack.container_id("web");
    let image = stack.running_image("web");

    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 4, "held back, not failed: {run:?}");
    assert!(run.stdout.contains("not enough space for the volume snapshots"), "{run:?}");
    assert_eq!(stack.container_id("web"), before, "nothing was touched");
    assert_eq!(stack.running_image("web"), image);
    assert!(stack.outcomes().is_empty(), "no revision was begun: {}", stack.journal());
    let written: Vec<_> = std::fs::read_dir(&disk.0).unwrap().collect();
    assert!(written.is_empty(), "nothing half-written: {written:?}");

    // With room, the same run goes ahead; a pre_backup hook keeps the
    // service running while it is copied.
    drop(disk);
    let marker = stack.scratch("dump").join("marker");
    stack.write_config(&format!(
        "    backup_dir: {}\n    services:\n      web:\n        backup_volumes: true\n        backup_binds: [./uploads]\n        pre_backup: echo $CLUSTERUP_SERVICE > {}\n",
        stack.scratch("backups").display(),
        marker.display()
    ));
    let run = stack.clusterup(&["apply", "--auto"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.all().contains("stopping web"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "web", "the hook ran first");
    let dir = stack.scratch("backups").join(&stack.name).join("rev-1");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["volumes"][0]["quiesced"], "pre_backup", "{m}");
    let mut kinds: Vec<(&str, &str)> = m["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["kind"].as_str().unwrap(), v["path"].as_str().unwrap()))
        .collect();
    kinds.sort();
    assert_eq!(kinds, [("bind", "/uploads"), ("volume", "/data")], "a bind mount only when listed: {m}");
    assert_eq!(stack.running_image("web"), crate::support::image_id("clusterup-fixture/web:v2"));
}
