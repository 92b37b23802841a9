#!/usr/bin/env python3
"""Checks the Converge services of compose/docker-compose.yml against the built executables.

No Docker engine runs in CI, so this proves what can be proven without one:
  1. every service on the converge:dev image runs an executable the Dockerfile installs (the
     Dockerfile copies <build>/bin/ to /usr/local/bin/; the executable must be in the bin dir);
  2. the stack runs every user-facing executable: migrate, relay, reconciler, the shop's setup
     and services, the device simulator;
  3. every CONVERGE_* variable a service sets is one its executable reads (named in its --help);
  4. the flags are accepted: converge-relay and converge-reconciler load the service's exact
     command line and environment with --check-config; for the others every --flag must appear
     in the executable's --help;
  5. order: everything that uses PostgreSQL waits (transitively) for `migrate` to complete,
     whatever uses Kafka or MQTT waits for that broker to be healthy, and every long-running
     Converge service has a healthcheck on the port its metrics endpoint binds.

Usage: check_services.py <bin dir>
"""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(ROOT, "compose", "docker-compose.yml")
DOCKERFILE = os.path.join(ROOT, "compose", "Dockerfile")
IMAGE = "converge:dev"
INSTALL_DIR = "/usr/local/bin/"
REQUIRED = {"convergectl", "converge-relay", "converge-reconciler", "converge-shop",
            "converge-device-sim"}
SCHEMA_EXECUTABLES = {"converge-relay", "converge-reconciler"}  # have --check-config

errors = []


def fail(msg):
    errors.append(msg)


def as_list(v):
    if v is None:
        return []
    return list(v) if isinstance(v, list) else v.split()


def help_text(exe_path, name, words):
    # convergectl documents its options per command; the others in one --help.
    if name == "convergectl":
        argv = [exe_path] + [w for w in words if not w.startswith("-")] + ["--help"]
    else:
        argv = [exe_path, "--help"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        fail(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout + r.stderr


def depends(services, name):
    d = services[name].get("depends_on") or {}
    return d if isinstance(d, dict) else {k: {"condition": "service_started"} for k in d}


def closure(services, name, seen=None):
    seen = set() if seen is None else seen
    for dep in depends(services, name):
        if dep not in seen:
            seen.add(dep)
            closure(services, dep, seen)
    return seen


def main():
    bin_dir = sys.argv[1]
    env = dict(os.environ, POSTGRES_PASSWORD="test")
    out = subprocess.run(["docker-compose", "-f", COMPOSE, "config"], env=env, check=True,
                         capture_output=True, text=True).stdout
    services = yaml.safe_load(out)["services"]

    dockerfile = open(DOCKERFILE).read()
    if not re.search(r"^COPY --from=build /src/build-release/bin/ /usr/local/bin/$", dockerfile,
                     re.M):
        fail("the Dockerfile no longer copies build-release/bin/ to /usr/local/bin/; update "
             "check_services.py with what it installs")

    used = set()
    for name, svc in services.items():
        image = svc.get("image", "")
        if image != IMAGE:
            if "build" in svc:
                fail(f"{name}: builds an image but is not tagged {IMAGE}")
            continue
        entry = as_list(svc.get("entrypoint"))
        words = entry + as_list(svc.get("command"))
        if not entry or not entry[0].startswith(INSTALL_DIR):
            fail(f"{name}: entrypoint must name an executable in {INSTALL_DIR}: {entry}")
            continue
        exe = entry[0][len(INSTALL_DIR):]
        exe_path = os.path.join(bin_dir, exe)
        if not os.access(exe_path, os.X_OK):
            fail(f"{name}: {exe} is not an executable the image installs (not in {bin_dir})")
            continue
        used.add(exe)
        svc_env = svc.get("environment") or {}
        if isinstance(svc_env, list):
            svc_env = dict(e.split("=", 1) for e in svc_env)
        text = help_text(exe_path, exe, words[1:])
        accepted = set(re.findall(r"CONVERGE_[A-Z0-9_]+", text))
        for var in svc_env:
            if var.startswith("CONVERGE_") and var not in accepted:
                fail(f"{name}: {exe} does not read {var} (its --help names {sorted(accepted)})")
        args = words[1:]
        if exe in SCHEMA_EXECUTABLES:
            run_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGE_")}
            run_env.update({k: str(v) for k, v in svc_env.items()})
            r = subprocess.run([exe_path] + args + ["--check-config"], env=run_env,
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                fail(f"{name}: {exe} rejects the service's configuration: {r.stderr.strip()}")
        else:
            for a in args:
                if a.startswith("--"):
                    flag = a.split("=", 1)[0]
                    if not re.search(re.escape(flag) + r"\b", text):
                        fail(f"{name}: {exe} has no flag {flag} (not in its --help)")
        # Order.
        uses_pg = "CONVERGE_PG_URL" in svc_env
        uses_kafka = "CONVERGE_KAFKA_BROKERS" in svc_env
        uses_mqtt = "CONVERGE_MQTT_URL" in svc_env or any("mosquitto:" in w for w in words)
        deps = depends(services, name)
        if name != "migrate" and uses_pg and "migrate" not in closure(services, name):
            fail(f"{name}: uses PostgreSQL but does not wait for migrate")
        if "migrate" in deps and deps["migrate"].get("condition") != "service_completed_successfully":
            fail(f"{name}: must wait for migrate to complete successfully")
        for broker, uses in (("kafka", uses_kafka), ("mosquitto", uses_mqtt)):
            if uses and deps.get(broker, {}).get("condition") != "service_healthy":
                fail(f"{name}: uses {broker} but does not wait for it to be healthy")
        if svc.get("restart") and exe != "converge-device-sim":
            test = " ".join(as_list((svc.get("healthcheck") or {}).get("test")))
            port = None
            for a in args:
                m = re.match(r"--metrics[.-]port=?(\d*)", a)
                if m:
                    port = m.group(1) or args[args.index(a) + 1]
            if not port or f"/dev/tcp/127.0.0.1/{port}" not in test:
                fail(f"{name}: a long-running service needs a healthcheck on its metrics port "
                     f"({port})")

    missing = REQUIRED - used
    if missing:
        fail(f"the stack does not run {sorted(missing)}")
    if errors:
        for e in errors:
            print("check_services: " + e, file=sys.stderr)
        sys.exit(1)
    print(f"check_services: ok ({len(used)} executables in "
          f"{sum(1 for s in services.values() if s.get('image') == IMAGE)} services)")


if __name__ == "__main__":
    main()
