"""The operator's surface end to end: `airflow standalone` on a free loopback port, a headless Chromium
(Selenium) logs in with the generated admin password, opens `dynamo_5min`, fills the `inbox` param in
the trigger form, triggers it, waits for the run to succeed and saves a screenshot of the finished run
to ``var/artifacts/ui_dynamo_5min_run.png``.

Needs Debian's ``chromium`` and ``chromium-driver``; without them the test skips (saying how to get
them), except under ``CI=true`` where it fails. Runtime: about a minute, most of it Airflow starting.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from dynamo_pipeline.store import open_store, upgrade

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "azure_llm_2023"
ARTIFACT = ROOT / "var" / "artifacts" / "ui_dynamo_5min_run.png"
INSTALL_HINT = "install a headless browser: sudo apt-get install -y chromium chromium-driver"


def _browser() -> tuple[str, str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    drv = shutil.which("chromedriver")
    if not exe or not drv:
        missing = " and ".join(n for n, p in (("chromium", exe), ("chromedriver", drv)) if not p)
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing} is missing; .ci/run should have installed it ({INSTALL_HINT})")
        pytest.skip(f"{missing} not found; {INSTALL_HINT}")
    return exe, drv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, token: str | None = None, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def airflow_server(tmp_path):
    """`airflow standalone` with the project's DAGs, a fresh metadata DB and a test store."""
    port = _free_port()
    home = Path(tempfile.mkdtemp(prefix="dynamo-airflow-ui-"))
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(store_url)
    (tmp_path / "scheduled_inbox").mkdir()  # scheduled runs (unpaused by the trigger) find no new logs
    base = f"http://127.0.0.1:{port}"
    env = {  # nothing inherited from AIRFLOW_* of this process (tests/test_dags.py sets its own at import)
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_VAR_DYNAMO_DATABASE_URL": store_url,
        "AIRFLOW_VAR_DYNAMO_INBOX": str(tmp_path / "scheduled_inbox"),
        # the publish task signs with the key from an Airflow Variable (never from code)
        "AIRFLOW_VAR_DYNAMO_SCHEDULE_KEY": "ui-test-schedule-key-0123456789abcdef",
        "DYNAMO_HOME": str(tmp_path / "home"),
    }
    log = open(tmp_path / "standalone.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                h = _get_json(f"{base}/api/v2/monitor/health")
                if all(h.get(k, {}).get("status") == "healthy" for k in ("scheduler", "dag_processor", "metadatabase")):
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"airflow standalone did not come up:\n{(tmp_path / 'standalone.log').read_text()[-3000:]}")
            time.sleep(1)
        print(f"airflow standalone healthy after {time.monotonic() - deadline + 180:.0f} s")
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        yield base, password, store_url, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(3)  # the API server and workers get a moment to exit, then whatever is left goes
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def test_trigger_5min_dag_with_params_from_the_ui_and_see_it_succeed(airflow_server):
    exe, drv = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    base, password, store_url, tmp = airflow_server
    t0 = time.monotonic()
    inbox = tmp / "ui_inbox"
    inbox.mkdir()
    shutil.copy(SAMPLES / "AzureLLMInferenceTrace_code.csv.gz", inbox)

    opts = webdriver.ChromeOptions()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
              f"--user-data-dir={tmp / 'chromium-profile'}"):
        opts.add_argument(a)
    opts.binary_location = exe
    d = webdriver.Chrome(service=Service(drv), options=opts)
    wait = WebDriverWait(d, 60)
    try:
        # log in
        d.get(base + "/")
        wait.until(EC.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
        d.find_element(By.NAME, "password").send_keys(password)
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda drv: "/auth/login" not in drv.current_url)

        # open the DAG (the dag processor may need a few seconds to parse it) and the trigger form
        for _ in range(30):
            d.get(base + "/dags/dynamo_5min")
            try:
                WebDriverWait(d, 5).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
                break
            except Exception:  # noqa: BLE001 - not parsed yet: reload
                time.sleep(1)
        field = wait.until(EC.presence_of_element_located((By.ID, "element_inbox")))
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
        field.click()
        field.send_keys(str(inbox)[:5])  # typed, as a person would; the rest set the way React expects,
        # since the form re-renders on every key and can drop keys typed while it does
        d.execute_script("const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;"
                         "set.call(arguments[0], arguments[1]);"
                         "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", field, str(inbox))
        time.sleep(1)
        assert field.get_attribute("value") == str(inbox)
        print(f"form filled at {time.monotonic() - t0:.0f} s")
        trigger = [b for b in d.find_elements(By.CSS_SELECTOR, "[role=dialog] button") if b.text.strip() == "Trigger"]
        assert trigger, "no Trigger button in the trigger form"
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", trigger[-1])
        trigger[-1].click()

        # wait for the manual run (REST API with a JWT, as a script would)
        token = _get_json(f"{base}/auth/token", body={"username": "admin", "password": password})["access_token"]
        run = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                runs = _get_json(f"{base}/api/v2/dags/dynamo_5min/dagRuns?run_type=manual", token)["dag_runs"]
            except OSError:  # a busy one-worker API server: ask again
                continue
            run = runs[0] if runs else None
            if run and run["state"] in ("success", "failed"):
                break
            time.sleep(2)
        print(f"run {run and run['state']} at {time.monotonic() - t0:.0f} s")
        assert run is not None, "the trigger form created no manual run"
        assert run["conf"].get("inbox") == str(inbox), f"the UI param did not reach the run: {run['conf']}"
        assert run["state"] == "success", f"run ended {run['state']}"

        # the run's page, for the artifact: its header says Success
        d.get(f"{base}/dags/dynamo_5min/runs/{run['dag_run_id']}")
        wait.until(lambda drv: "Success" in drv.find_element(By.TAG_NAME, "body").text)
        time.sleep(1)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(ARTIFACT))
    finally:
        d.quit()

    store = open_store(store_url)
    with store.engine.connect() as c:
        from sqlalchemy import text

        assert c.execute(text("SELECT COUNT(*) FROM requests")).scalar() > 0
    store.dispose()
