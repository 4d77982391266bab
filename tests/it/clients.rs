//! The official Python client's own end-to-end suites, run unchanged
//! against a wkube server: the dynamic client's (sync and asyncio) and its
//! discovery cache's, as shipped in the pinned `kubernetes` wheel
//! (tests/clients/python/requirements.txt). The wheel lacks only the
//! module those suites take their cluster from; tests/clients/python/shim
//! provides it, pointed at the test server's admin kubeconfig.
//!
//! The venv is built once per requirements file (PyPI is reachable from
//! the machines this runs on) and kept beside the build's target dir.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestServer, run};

/// Tests left out, each with why. Nothing else may fail.
const DESELECTED: &[(&str, &str)] = &[
    (
        "dynamic/test_client.py::TestDynamicClient::test_cluster_custom_resources",
        "creates its CRD as apiextensions.k8s.io/v1beta1, which Kubernetes \
         stopped serving in 1.22 and wkube never served",
    ),
    (
        "dynamic/test_client.py::TestDynamicClient::test_namespaced_custom_resources",
        "apiextensions.k8s.io/v1beta1, as above",
    ),
    (
        "dynamic/test_client.py::TestDynamicClient::test_async_namespaced_custom_resources",
        "apiextensions.k8s.io/v1beta1, as above",
    ),
    (
        "dynamic/test_discovery.py::TestDiscoverer::test_cache_decoder_resource_and_subresource",
        "compares two Resources holding different DynamicClient instances, \
         which Python compares by identity: it fails against any server",
    ),
    (
        "aio/dynamic/client_test.py::TestDynamicClient::test_server_side_apply_api",
        "applies a Deployment (apps/v1) to the pods endpoint; Kubernetes answers \
         400 too (the apply patch's version must be the endpoint's)",
    ),
];

/// The suites, relative to the installed `kubernetes` package.
const SUITES: &[&str] = &[
    "dynamic/test_client.py",
    "dynamic/test_discovery.py",
    "aio/dynamic/client_test.py",
];

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python")
}

/// A venv with the pinned requirements, rebuilt when they change.
fn venv() -> PathBuf {
    let requirements = client_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = base.join("python-clients");
    let stamp = dir.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Debian's python3 (scripts/test installs python3-venv for it), not
    // whichever one comes first on a developer's PATH.
    let made = run(
        {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-m", "venv"]).arg(&dir);
            c
        },
        None,
        Duration::from_secs(120),
    );
    assert!(made.status.success(), "python3 -m venv: {}", made.stderr);
    let pip = run(
        {
            let mut c = Command::new(dir.join("bin/pip"));
            c.args([
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-q",
                "-r",
            ])
            .arg(&requirements);
            c
        },
        None,
        Duration::from_secs(600),
    );
    assert!(
        pip.status.success(),
        "pip install: {}\n{}",
        pip.stdout,
        pip.stderr
    );
    std::fs::write(&stamp, wanted).unwrap();
    dir
}

/// The installed `kubernetes` package.
fn package(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    let python = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .expect("a python3.X dir in the venv")
        .path();
    python.join("site-packages/kubernetes")
}

#[test]
fn the_python_clients_dynamic_e2e_suites_pass() {
    let venv = venv();
    let pkg = package(&venv);
    let s = TestServer::builder().start();
    // The discovery cache file goes to the temp dir; one of our own keeps
    // runs from reading each other's.
    let tmp = tempfile::tempdir().unwrap();

    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.current_dir(client_dir())
        .env("KUBECONFIG", s.admin_kubeconfig())
        .env("PYTHONPATH", client_dir())
        .env("TMPDIR", tmp.path())
        .args([
            "-m",
            "pytest",
            "-p",
            "wkube_shim",
            "-p",
            "no:cacheprovider",
            "-q",
            "--no-header",
            "-rfE",
        ])
        // Test ids (and so the deselections) relative to the package.
        .arg(format!("--rootdir={}", pkg.display()));
    for suite in SUITES {
        cmd.arg(pkg.join(suite));
    }
    for (test, _why) in DESELECTED {
        cmd.arg(format!("--deselect={test}"));
    }
    let out = run(cmd, None, Duration::from_secs(600));
    let summary = out.stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        out.status.success(),
        "the Python client's suites failed: {summary}\n{}\n{}\n{}",
        out.stdout,
        out.stderr,
        s.log_tail(30)
    );
    // Every deselection named a test that exists, and the rest all ran.
    assert!(
        summary.contains(&format!("{} deselected", DESELECTED.len())),
        "{summary}"
    );
    let passed: usize = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 20, "{summary}");
}
