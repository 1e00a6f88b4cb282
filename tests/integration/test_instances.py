"""Several DSS instances in one mount (-o instances=, issue 10): one folder per instance of
config.json at the root, each with its own URL, key, cache and connections; one instance
failing is an error in its folder only."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess

import pytest

from dssfs_harness import (ADMIN_KEY, CONTROL_PORT_ARGS, READER_KEY, clean_env, dssfs_bin,
                           errname, errno_of, is_mounted, project_names, read_bytes,
                           run_dssfs)

# prod's emulator knows only this key: a key sent to the wrong URL is refused there (401)
PROD_KEY = "itProdAdminKey-5a0e3c91d2b7f864"
META = ("SALES", "variables.json")
META_EP = "projects/SALES/variables/"
DS_META = ("SALES", "datasets", "customers", "metadata.json")
DS_META_EP = "projects/SALES/datasets/customers/metadata"
# errnos of an instance that does not answer (errmap.c)
DOWN = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EIO, errno.ETIMEDOUT}


def _mp(tmp_path, name="mnt"):
    p = tmp_path / name
    p.mkdir(exist_ok=True)
    return str(p)


def _write_config(home, instances, default=None):
    path = home / ".dataiku" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"dss_instances": {name: {"url": emu.url, "api_key": key}
                             for name, (emu, key) in instances.items()}}
    if default:
        doc["default_instance"] = default
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def design_prod(emulator_factory, home):
    """Two emulators of the demo instance, `design` and `prod` in config.json (with a
    third, `alpha`, a reader of design's), and the environment pointing elsewhere."""
    design = emulator_factory(name="design-emulator",
                              users=["%s:reader:SALES=read,*=none" % READER_KEY])
    prod = emulator_factory(name="prod-emulator", admin_key=PROD_KEY)
    _write_config(home, {"design": (design, ADMIN_KEY), "prod": (prod, PROD_KEY),
                         "alpha": (design, READER_KEY)}, default="alpha")
    return design, prod


def _mount(mount_factory, instances="design,prod", options=(), **kw):
    # DKU_ variables of a third server: -o instances= does not use them
    env = {"DKU_DSS_URL": "http://127.0.0.1:9", "DKU_API_KEY": "itEnvKeyNeverSent-0c1d"}
    return mount_factory(None, creds=None, env=env,
                         options=["instances=" + instances, *options], **kw)


def _non_gets(emu):
    return [ln for ln in emu.log_lines() if not ln.startswith("GET ")]


def _change_prod_description(prod):
    meta = prod.api_get(META_EP, key=PROD_KEY)
    meta["standard"]["drift"] = "changed on prod only"
    status, body = prod.request("PUT", "/public/api/" + META_EP, body=meta, key=PROD_KEY)
    assert status == 200, body
    return meta


def test_root_has_a_folder_per_instance(design_prod, mount_factory):
    design, prod = design_prod
    m = _mount(mount_factory, options=["prefetch=0"])
    assert os.listdir(m.mnt) == ["design", "prod"]      # in the order of the option
    st = os.stat(m.mnt)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_ino == 1
    for name in ("design", "prod"):
        assert stat.S_ISDIR(os.stat(m.path(name)).st_mode)
    assert project_names(m.path("design")) == project_names(m.path("prod")) == \
        sorted(p["projectKey"] for p in design.api_get("projects/"))
    assert errno_of(os.stat, m.path("staging")) == errno.ENOENT
    # each key went to its own URL only (prod's emulator refuses design's key)
    assert "instance \"design\"" in m.stderr_text() and "instance \"prod\"" in m.stderr_text()
    for secret in (PROD_KEY, ADMIN_KEY, "itEnvKeyNeverSent"):
        assert secret not in m.stderr_text()
    with open("/proc/%d/cmdline" % m.proc.pid, "rb") as f:
        assert PROD_KEY.encode() not in f.read()


def test_each_folder_reads_its_own_instance(design_prod, mount_factory):
    design, prod = design_prod
    want_prod = _change_prod_description(prod)
    want_design = design.api_get(META_EP)
    assert want_prod != want_design
    m = _mount(mount_factory, options=["prefetch=0"])
    got_design = json.loads(read_bytes(m.path("design", *META)))
    got_prod = json.loads(read_bytes(m.path("prod", *META)))
    assert got_design == want_design and got_prod == want_prod
    # distinct inodes: diff and cp must not take one for the other
    assert os.stat(m.path("design", *META)).st_ino != os.stat(m.path("prod", *META)).st_ino


def test_diff_shows_the_drift_between_instances(design_prod, mount_factory):
    design, prod = design_prod
    m = _mount(mount_factory)
    same = subprocess.run(["diff", "-r", m.path("design", "SALES"), m.path("prod", "SALES")],
                          capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    _change_prod_description(prod)
    m.sighup()
    r = subprocess.run(["diff", "-r", m.path("design", "SALES"), m.path("prod", "SALES")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert '>     "drift": "changed on prod only"' in r.stdout
    differ = {ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("diff -r ")}
    # (the project's settings.json carries its versionTag, which any change moves)
    assert m.path("prod", *META) in differ
    assert differ <= {m.path("prod", *META), m.path("prod", "SALES", "settings.json")}


def test_a_save_lands_on_its_instance_only(design_prod, mount_factory):
    design, prod = design_prod
    before = prod.api_get(DS_META_EP, key=PROD_KEY)
    untouched = design.api_get(DS_META_EP)
    m = _mount(mount_factory, options=["prefetch=0"])
    target = m.path("prod", *DS_META)
    doc = json.loads(read_bytes(target))
    doc["description"] = "Customers, saved through the prod folder"
    design.reset_stats()
    prod.reset_stats()
    with open(target, "w") as f:
        f.write(json.dumps(doc))
    assert design.request_count() == 0 and design.log_lines() == []
    assert _non_gets(prod) == ["PUT /public/api/" + DS_META_EP]
    assert prod.stats()["by_method"].get("PUT") == 1
    saved = "Customers, saved through the prod folder"
    assert prod.api_get(DS_META_EP, key=PROD_KEY)["description"] == saved
    assert before.get("description") != saved
    assert design.api_get(DS_META_EP) == untouched
    # the kernel's cache of the saved file was dropped: it reads back as prod has it
    assert json.loads(read_bytes(target))["description"] == saved
    assert json.loads(read_bytes(m.path("design", *DS_META))) == untouched


def test_rename_across_instances_is_exdev(design_prod, mount_factory):
    m = _mount(mount_factory, options=["prefetch=0"])
    src, dst = m.path("design", *DS_META), m.path("prod", *DS_META)
    assert errname(errno_of(os.rename, src, dst)) == "EXDEV"
    # a scratch file too: no instance can take another's file by rename
    scratch = m.path("design", "SALES", "datasets", "customers", "metadata.json~")
    with open(scratch, "w") as f:
        f.write("{}")
    assert errname(errno_of(os.rename, scratch, dst + "~")) == "EXDEV"
    os.unlink(scratch)
    # the root is not DSS's: its folders are neither made, renamed nor removed here
    assert errname(errno_of(os.rename, m.path("design"), m.path("staging"))) == "EPERM"
    assert errname(errno_of(os.mkdir, m.path("staging"))) == "EPERM"
    assert errname(errno_of(os.rmdir, m.path("prod"))) == "EPERM"
    assert errname(errno_of(open, m.path("notes.txt"), "w")) in ("EPERM", "EACCES")
    assert errname(errno_of(os.chmod, m.path(), 0o755)) in ("EPERM", "EACCES")
    assert os.listdir(m.mnt) == ["design", "prod"]


def test_the_list_of_names_ends_at_the_next_option(design_prod, mount_factory):
    """-o instances=design,prod,ro,noatime,attr_timeout=2: two instances, read-only."""
    m = _mount(mount_factory, options=["ro", "noatime", "attr_timeout=2"])
    assert os.listdir(m.mnt) == ["design", "prod"]
    assert errname(errno_of(open, m.path("prod", *DS_META), "r+")) == "EROFS"


@pytest.mark.expect_dssfs_errors
def test_a_stopped_instance_fails_in_its_folder_only(design_prod, mount_factory):
    design, prod = design_prod
    m = _mount(mount_factory, options=["prefetch=0", "retries=0"])
    prod.stop()
    assert errno_of(read_bytes, m.path("prod", *DS_META)) in DOWN
    assert json.loads(read_bytes(m.path("design", *DS_META))) == design.api_get(DS_META_EP)
    assert os.listdir(m.mnt) == ["design", "prod"]


@pytest.mark.expect_dssfs_errors
def test_an_instance_down_at_mount_does_not_stop_the_mount(design_prod, mount_factory):
    design, prod = design_prod
    prod.stop()
    m = _mount(mount_factory, options=["prefetch=0", "retries=0"])
    err = m.stderr_text()
    assert "instance prod: cannot list the projects of %s" % prod.url in err
    assert "dssfs: error: instance prod: GET projects/: " in err   # each request's line
    assert "instance design" not in err.replace("instance \"design\"", "")
    assert os.listdir(m.mnt) == ["design", "prod"]
    assert errno_of(os.listdir, m.path("prod")) in DOWN
    assert errno_of(read_bytes, m.path("prod", *META)) in DOWN
    assert json.loads(read_bytes(m.path("design", *META))) == design.api_get(META_EP)


def test_stats_of_each_instance_and_their_sum(design_prod, mount_factory):
    design, prod = design_prod
    m = _mount(mount_factory, options=["prefetch=0"])
    read_bytes(m.path("prod", *META))
    fig = json.loads(os.getxattr(m.mnt, "user.dssfs.stats"))
    assert sorted(fig["instances"]) == ["design", "prod"]
    each = fig["instances"]
    assert fig["requests"]["total"] == each["design"]["requests"]["total"] + \
        each["prod"]["requests"]["total"]
    assert each["prod"]["requests"]["total"] > each["design"]["requests"]["total"]
    assert fig["cache"]["max_bytes"] == 32 << 20      # cache_max, shared by the two
    assert each["prod"]["cache"]["max_bytes"] == 16 << 20
    out = subprocess.run([str(dssfs_bin()), "stats", m.mnt], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["instances"].keys() == {"design", "prod"}


def test_all_mounts_every_instance_in_name_order(design_prod, mount_factory):
    design, prod = design_prod
    m = _mount(mount_factory, instances="all", options=["prefetch=0"])
    assert os.listdir(m.mnt) == ["alpha", "design", "prod"]
    # alpha is design's server with the reader's key: it sees SALES only
    assert project_names(m.path("alpha")) == ["SALES"]
    assert len(project_names(m.path("design"))) == 3


def test_an_instance_name_is_escaped_as_a_folder_name(emulator, mount_factory, home):
    _write_config(home, {"a/b": (emulator, ADMIN_KEY), "..": (emulator, ADMIN_KEY)})
    m = _mount(mount_factory, instances="all", options=["prefetch=0"])
    assert sorted(os.listdir(m.mnt)) == ["%2E%2E", "a%2Fb"]
    assert project_names(m.path("a%2Fb")) == project_names(m.path("%2E%2E"))


def test_single_instance_mount_is_unchanged(design_prod, mount_factory):
    """Without -o instances= the root is the instance's (projects, instance/)."""
    m = mount_factory(None, creds=None, options=["instance=design"])
    assert "SALES" in os.listdir(m.mnt) and "design" not in os.listdir(m.mnt)
    assert os.stat(m.mnt).st_ino == 1


# --- configuration errors: refused before mounting, with a message -------------------------

@pytest.mark.parametrize("extra, message", [
    (["-o", "instances=design,staging"],
     'instance "staging" is not defined in'),
    (["-o", "instances=design,prod,design"], 'instance "design" is named twice'),
    (["-o", "instances=design,,prod"], "an empty instance name"),
    (["-o", "instances=design,prod,instance=prod"], "cannot be combined"),
    (["-o", "instances=all,url=http://127.0.0.1:9"], "cannot be combined"),
    (["-o", "instances=all,api_key_file=/dev/null"], "cannot be combined"),
    (["-o", "instances=design,prod", "prod"], "cannot be combined"),
])
def test_configuration_errors_are_refused(design_prod, tmp_path, home, extra, message):
    mp = _mp(tmp_path)
    design, prod = design_prod
    rc, out, err = run_dssfs(["-f", *extra, mp], clean_env(home), mountpoint=mp)
    assert rc == 1 and message in err, err
    assert not is_mounted(mp)
    assert PROD_KEY not in err and ADMIN_KEY not in err
    assert design.request_count() == 0 and prod.request_count() == 0


def test_all_without_instances_in_config_is_refused(tmp_path, home):
    mp = _mp(tmp_path)
    rc, out, err = run_dssfs(["-f", "-o", "instances=all", mp], clean_env(home), mountpoint=mp)
    assert rc == 1 and "defines no instances (dss_instances)" in err, err
    assert not is_mounted(mp)


def test_help_lists_instances(home):
    rc, out, err = run_dssfs(["--help"], clean_env(home))
    assert rc == 0 and "-o instances=" in out


def test_an_instance_without_a_key_is_refused_by_name(emulator, tmp_path, home):
    """Its entry has no api_key: refused, the environment's key is not taken instead."""
    path = home / ".dataiku" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dss_instances": {
        "design": {"url": emulator.url, "api_key": ADMIN_KEY},
        "nokey": {"url": emulator.url}}}))
    mp = _mp(tmp_path)
    env = clean_env(home, {"DKU_DSS_URL": emulator.url, "DKU_API_KEY": ADMIN_KEY})
    rc, out, err = run_dssfs(["-f", "-o", "instances=all", mp], env, mountpoint=mp)
    assert rc == 1 and 'instance "nokey": no DSS API key configured' in err, err
    assert not is_mounted(mp) and emulator.request_count() == 0


def test_project_folder_links_stay_in_their_instance(design_prod, mount_factory):
    """The links of instance/project-folders are relative to the instance's own root:
    in the mount they reach the project of the same instance."""
    m = _mount(mount_factory, options=["prefetch=0"])
    for name in ("design", "prod"):
        link = m.path(name, "instance", "project-folders", "Business", "Sales & Marketing",
                      "SALES")
        assert os.readlink(link) == "../../../../SALES"
        assert os.path.realpath(link) == m.path(name, "SALES")


def test_each_instance_keeps_its_file_times_across_mounts(design_prod, mount_factory, home,
                                                          tmp_path):
    """A times file per instance (README, "What you read"): after a remount, a backup of
    the whole mount copies nothing, though design and prod hold the same paths."""
    design, prod = design_prod
    _change_prod_description(prod)
    dest = str(tmp_path / "backup")

    def backup(m):
        r = subprocess.run(["rsync", "-a", "--out-format=%n", m.mnt + "/", dest],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return [n for n in r.stdout.splitlines() if not n.endswith("/")]

    m = _mount(mount_factory)
    assert "prod/instance/users/alice.json" in backup(m)
    assert m.finish() == []
    assert len(os.listdir(os.path.join(str(home), ".cache", "dssfs"))) == 2
    m = _mount(mount_factory)
    assert backup(m) == []


@pytest.mark.expect_dssfs_errors
def test_whether_a_key_is_admin_is_asked_again_once_its_instance_answers(
        emulator_factory, mount_factory, home):
    """An instance down at mount: its instance/ fails (DSS's error) instead of showing what
    a non-admin key would see; once DSS is back, the first read of it asks (one GET of
    admin/variables/) and shows the admin objects."""
    design = emulator_factory(name="design-emulator")
    prod = emulator_factory(name="prod-emulator", admin_key=PROD_KEY,
                            args=CONTROL_PORT_ARGS)
    _write_config(home, {"design": (design, ADMIN_KEY), "prod": (prod, PROD_KEY)})
    prod.pause()
    m = _mount(mount_factory, options=["prefetch=0", "retries=0"])
    assert errno_of(os.listdir, m.path("prod", "instance")) in DOWN
    assert "users" in os.listdir(m.path("design", "instance"))
    prod.resume()
    prod.reset_stats()
    assert "users" in os.listdir(m.path("prod", "instance"))
    assert [ln.split()[1] for ln in prod.log_lines()].count("/public/api/admin/variables/") == 1
    assert os.listdir(m.path("prod", "instance", "users"))
