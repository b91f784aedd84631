"""pytest plugin (entry point ``pytest11``): parity tests in one line.

Options (each also an ini key in ``[tool.pytest.ini_options]``, or a key of ``[tool.parity]``: ``preset``,
``model_dir``, ``suite_profiles``, ``device``, ``report``, ``policy``, ``bundles``):

``--parity-preset`` (``parity_preset``), ``--parity-model-dir`` (``parity_model_dir``),
``--parity-profile`` repeatable (``parity_profiles``), ``--parity-device`` (``parity_device``),
``--parity-report PATH`` (``parity_report``: one summary page for the session plus a report per failing
case), ``--parity-update-golden``, ``--parity-policy`` (``parity_policy``), ``--parity-bundle`` repeatable,
``--parity-onnx-estimator FILE`` (``parity_onnx_estimator``, ``[tool.parity] onnx_estimator``: the suite's
candidates run this exported estimator under ONNX Runtime; default profile onnx-cpu) and
``--parity-require-provider NAME`` (``parity_require_provider``, ``[tool.parity] require_provider``): switch
overrides of the suite's candidates (``parity_case``), as ``--onnx-estimator`` / ``--require-provider`` of
``parity run``.

Default profiles: the shipped CPU profiles, plus the ONNX Runtime ones when the ``[onnx]`` extra is installed
(:func:`parity.project.suite_profiles`); a profile whose ONNX Runtime provider is missing here (onnx-cuda,
onnx-tensorrt on a CPU machine) is collected and skipped with the reason.

Markers: ``parity_full`` (full-size model; selected with ``-m parity_full``), ``gpu`` (needs CUDA;
skipped without), ``slow``.

Fixtures:

* ``parity_case`` -- parametrised over (profile, bundle, run mode): the fixture bundles x the profiles x one
  call offline and streaming, and the streaming session (upstream's chunked loop,
  ``RunMode.streaming_session()``) on the session bundles (``fixtures/sessions``; not when bundles are configured)
  x the suite's fp32 profiles (``compiled`` only when named explicitly: it recompiles for every call length);
  runs reference and candidate
  and returns the :class:`parity.harness.Case` (``case.result`` is the comparison result);
* ``assert_parity(case)`` -- fails with the headline finding and the path of the report it writes;
* ``parity_model``, ``parity_policy``, ``parity_reference(bundle, streaming, mode=)`` (cached reference runs),
  ``parity_run(profile, bundle, streaming, faults=(), mode=)`` (any candidate, any run mode, cached reference),
  ``parity_golden`` (``parity_golden.check(bundle, mode)`` compares the reference with its golden trace in that
  mode, a streaming session's included, or rewrites it under ``--parity-update-golden``; a missing golden fails
  without that option); ``parity_harness`` (the session's :class:`ParityHarness`; also ``parity_session``);
* parametrisations: ``parity_fault`` (every fault of the catalogue, single-call and streaming-session),
  ``parity_bundle_mode`` ((bundle, run mode) of every golden).

Every case is judged by the plugin's :class:`parity.judge.spec.ComparisonSpec` (the project's policy, the
floor store), as ``parity run`` judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reference.errors import InputError

from .onnx_options import OnnxOptions
from .project import ProjectConfig, default_bundles, default_session_bundles, read_project, suite_profiles


def pytest_addoption(parser):
    g = parser.getgroup("tts-parity", "TTS parity harness")
    g.addoption("--parity-preset", default=None, help="built-in model preset (tiny | cosyvoice3-0.5b)")
    g.addoption("--parity-model-dir", default=None, help="released model directory (cosyvoice3.yaml, flow.pt, hift.pt)")
    g.addoption("--parity-profile", action="append", default=None, help="candidate profile (repeatable)")
    g.addoption("--parity-device", default=None, choices=["cpu", "cuda"], help="candidate device")
    g.addoption("--parity-report", default=None, help="write one summary report for the session (+ one per failing case)")
    g.addoption("--parity-update-golden", action="store_true", default=False, help="rewrite the golden traces")
    g.addoption("--parity-policy", default=None, help="extra tolerance policy TOML")
    g.addoption("--parity-bundle", action="append", default=None, help="input bundle (repeatable; default: fixtures)")
    g.addoption("--parity-onnx-estimator", default=None, metavar="FILE",
                help="the suite's candidates run this exported DiT estimator under ONNX Runtime (default profile "
                     "onnx-cpu)")
    g.addoption("--parity-require-provider", default=None, metavar="NAME",
                help="the ONNX Runtime session must run on this provider (cpu, cuda, tensorrt)")
    parser.addini("parity_preset", "default model preset", default="tiny")
    parser.addini("parity_model_dir", "model directory", default="")
    parser.addini("parity_profiles", "candidate profiles", type="linelist", default=[])
    parser.addini("parity_device", "candidate device", default="cpu")
    parser.addini("parity_report", "session report path", default="")
    parser.addini("parity_policy", "extra tolerance policy TOML", default="")
    parser.addini("parity_onnx_estimator", "exported DiT estimator for the suite's candidates (ONNX Runtime)",
                  default="")
    parser.addini("parity_require_provider", "required ONNX Runtime provider", default="")


def pytest_configure(config):
    for line in ("parity_full: full-size model parity (selected with -m parity_full)",
                 "gpu: needs a CUDA device (skipped without one)",
                 "slow: slow test"):
        config.addinivalue_line("markers", line)
    config._parity = ParityConfig.from_config(config)
    config._parity_tally = OutcomeTally()
    config.pluginmanager.register(config._parity_tally, "tts-parity-outcomes")
    _claim_report(config)


def _claim_report(config) -> None:
    """Where this session's reports go, decided once: a worker takes its controller's choice; a controller or a
    plain session checks ``--parity-report`` before any test runs (a usage error otherwise) and claims the name
    for the session (:func:`parity.outputs.claim_output`: a concurrent session gets the next free name, said)."""
    from .outputs import Output, claim_output, prepare_outputs

    pc: ParityConfig = config._parity
    winput = getattr(config, "workerinput", None)
    if winput is not None:
        if winput.get("parity_report_base"):
            pc.report_base = Path(winput["parity_report_base"])
            if pc.report:
                pc.report = str(pc.report_base)
        return
    base = Path(pc.report) if pc.report else pc.rootdir / "reports" / "pytest-parity.html"
    try:
        if pc.report:
            prepare_outputs([Output("--parity-report", base)])
        pc.report_base = claim_output(base, "--parity-report" if pc.report else "the case report directory",
                                      companions=[lambda p: p.with_suffix("")]).path
    except InputError as exc:
        raise pytest.UsageError(f"parity: {exc}") from None
    if pc.report:
        pc.report = str(pc.report_base)


@dataclass
class ParityConfig:
    """The plugin's settings: command-line option, else ini key, else ``[tool.parity]`` key, else default."""

    preset: str = "tiny"
    model_dir: str | None = None
    profiles: list[str] = field(default_factory=list)
    device: str = "cpu"
    report: str | None = None
    update_golden: bool = False
    policy: str | None = None
    bundles: list[str] = field(default_factory=list)
    rootdir: Path = Path(".")
    project: ProjectConfig = field(default_factory=ProjectConfig)
    report_base: Path | None = None  # the claimed session page path (or the default case-report base)
    onnx: OnnxOptions = field(default_factory=OnnxOptions)  # switch overrides of the suite's candidates
    default_profiles: bool = False  # profiles from suite_profiles() (nothing configured)
    profiles_explicit: bool = False  # profiles named by option/ini/[tool.parity], not the shipped defaults

    @classmethod
    def from_config(cls, config) -> "ParityConfig":
        root = Path(str(config.rootpath))
        try:
            project = read_project(root / "pyproject.toml")
        except InputError as exc:
            raise pytest.UsageError(f"parity: {exc}") from None

        def pick(opt, ini, value):
            v = config.getoption(opt)
            if v not in (None, [], ""):
                return v
            try:
                iv = config.getini(ini)
            except ValueError:
                iv = None
            if iv not in (None, [], ""):
                return iv
            return value

        onnx_file = pick("--parity-onnx-estimator", "parity_onnx_estimator", project.onnx_estimator)
        if onnx_file and not Path(str(onnx_file)).is_absolute():
            onnx_file = root / str(onnx_file)
        onnx = OnnxOptions(str(onnx_file) if onnx_file else None,
                           pick("--parity-require-provider", "parity_require_provider", project.require_provider))
        try:
            onnx.overrides()
        except InputError as exc:
            raise pytest.UsageError(f"parity: {exc}") from None
        # [tool.parity] suite_profiles (``profiles`` there is the table of user-defined profiles)
        configured = pick("--parity-profile", "parity_profiles", project.suite_profiles)
        profiles = onnx.profiles(configured, suite_profiles("cpu"))
        return cls(preset=pick("--parity-preset", "parity_preset", project.preset) or "tiny",
                   model_dir=pick("--parity-model-dir", "parity_model_dir", project.model_dir) or None,
                   profiles=list(profiles), device=pick("--parity-device", "parity_device", project.device) or "cpu",
                   report=pick("--parity-report", "parity_report", project.report) or None,
                   update_golden=bool(config.getoption("--parity-update-golden")),
                   policy=pick("--parity-policy", "parity_policy", project.policy) or None,
                   bundles=list(config.getoption("--parity-bundle") or project.bundles or []), rootdir=root,
                   project=project, onnx=onnx, default_profiles=not configured and not onnx.estimator,
                   profiles_explicit=bool(configured))

    def model_spec(self, preset: str | None = None):
        from .harness import ModelSpec

        if preset is None and self.model_dir:
            return ModelSpec(None, self.model_dir)
        return ModelSpec(preset or self.preset)


# ---------------------------------------------------------------------------------------------
# collection: parametrisation and markers

def _bundles(pc: ParityConfig) -> list[Path]:
    return [Path(b) for b in pc.bundles] if pc.bundles else default_bundles()


# In the default suite (no profile and no bundle configured) the ONNX Runtime profiles run on this one fixture
# bundle, offline and streaming: they swap the estimator alone (the graph's length axis is tested at 37, 256 and
# 301 frames in tests/test_onnx.py; solver, CFG and vocoder are the PyTorch profiles' code), and on its 130
# frames (three 50-frame chunks) the streaming chunk-mask check decides. It keeps their CI cost at a third.
ONNX_SUITE_BUNDLE = "medium"


def _profile_bundles(pc: ParityConfig, profile: str, bundles: list[Path]) -> list[Path]:
    from candidate.switches import ONNX_PROFILES

    if not (pc.default_profiles and not pc.bundles and profile in ONNX_PROFILES):
        return bundles
    return [b for b in bundles if b.stem == ONNX_SUITE_BUNDLE] or bundles[:1]


def profile_unavailable(pc: ParityConfig, profile: str) -> str | None:
    """Why ``profile`` (with the suite's switch overrides) cannot run here: its estimator backend's reason
    (:meth:`candidate.backends.Backend.unavailable`: an ONNX Runtime provider, a port's package missing); None
    when it can, or when it does not resolve (the case then fails with that error when it runs)."""
    from .project import profile_switches

    try:
        sw = profile_switches(profile, (), pc.project.path)
        if sw.backend.takes_switches:
            sw = profile_switches(profile, (), pc.project.path, **pc.onnx.overrides())
    except InputError:
        return None
    return sw.backend.unavailable(sw)
def session_profiles(pc: ParityConfig) -> list[str]:
    """The suite's profiles for the streaming-session cases: the fp32 ones (the session's chunk stages reuse the
    single-call rules; reduced precision was measured by hand, docs/benchmarks.md), ``torch.compile`` ones only
    when named explicitly (a recompilation per call length: about a minute on the tiny preset)."""
    from .project import profile_switches

    out = []
    for p in pc.profiles:
        try:
            sw = profile_switches(p, (), pc.project.path)
        except Exception:  # noqa: BLE001 - an unknown profile fails in its own single-call cases
            continue
        if sw.precision != "fp32" or ((sw.compile or sw.estimator_backend != "torch") and not pc.profiles_explicit):
            continue  # another backend (ONNX Runtime): the chunk-mask check is covered by its single-call cases
        out.append(p)
    return out


def pytest_generate_tests(metafunc):
    pc: ParityConfig = metafunc.config._parity
    from .capture.runner import RunMode

    one_call = (RunMode(), RunMode(streaming=True))
    session = RunMode.streaming_session()
    if "parity_case_spec" in metafunc.fixturenames:
        params = []
        for prof in pc.profiles:
            why = profile_unavailable(pc, prof)
            marks = [pytest.mark.skip(reason=f"profile {prof}: {why}")] if why else []
            for b in _profile_bundles(pc, prof, _bundles(pc)):
                for mode in one_call:
                    params.append(pytest.param((prof, str(b), mode), marks=marks, id=f"{b.stem}-{prof}-{mode.label}"))
        # the streaming session (upstream's loop) on the session bundles, unless the bundles are configured
        for prof in session_profiles(pc) if not pc.bundles else ():
            for b in default_session_bundles():
                params.append(pytest.param((prof, str(b), session), id=f"{b.stem}-{prof}-{session.label}"))
        metafunc.parametrize("parity_case_spec", params)
    if "parity_bundle_mode" in metafunc.fixturenames:
        specs = [(str(b), m) for b in _bundles(pc) for m in one_call]
        specs += [(str(b), session) for b in (default_session_bundles() if not pc.bundles else ())]
        metafunc.parametrize("parity_bundle_mode", specs, ids=[f"{Path(b).stem}-{m.label}" for b, m in specs])
    if "parity_fault" in metafunc.fixturenames:
        from candidate.faults import catalogue

        names = sorted(catalogue("all"))
        metafunc.parametrize("parity_fault", names, ids=names)


def pytest_collection_modifyitems(config, items):
    markexpr = config.getoption("-m") or ""
    cuda = _cuda_available()
    for item in items:
        if item.get_closest_marker("parity_full") and "parity_full" not in markexpr:
            item.add_marker(pytest.mark.skip(reason="full-size model parity: select with -m parity_full"))
        if item.get_closest_marker("gpu") and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (none available)"))


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# ---------------------------------------------------------------------------------------------
# the pytest session's harness

class ParityHarness:
    """The pytest session's :class:`parity.harness.Harness` (project, comparison spec, models, candidates,
    reference cache) plus the cases run in it and where their reports go."""

    def __init__(self, pc: ParityConfig):
        from .floor.store import FloorStore
        from .harness import Harness
        from .judge.policy import load_policy
        from .judge.spec import ComparisonSpec

        self.pc = pc
        self.harness = Harness(project=pc.project, spec=ComparisonSpec(policy=load_policy(pc.policy, pc.project),
                                                                       floors=FloorStore()))
        self.cases: list = []
        self.case_tests: list[str | None] = []  # the node id of the test that ran each case
        self.current_test: str | None = None
        self.outcomes: dict[str, str] = {}  # node id -> outcome (this process's tests)

    def policy(self):
        return self.harness.policy

    def model(self, preset: str | None = None):
        return self.harness.model(self.pc.model_spec(preset))

    def candidate(self, model, profile: str, faults=(), device: str | None = None, overrides: dict | None = None):
        return self.harness.candidate(model, profile, faults, device or self.pc.device, overrides=overrides)

    def run(self, profile: str, bundle, streaming: bool = False, faults=(), model=None, patterns=None,
            local: bool = True, mode=None, overrides: dict | None = None):
        """One case; ``mode``: a :class:`parity.capture.runner.RunMode` (default: one call, ``streaming``)."""
        from .capture.runner import RunMode

        model = model or self.model()
        cand = self.candidate(model, profile, faults, overrides=overrides)
        case = self.harness.run(model, cand, bundle, mode or RunMode(streaming), patterns=patterns, local=local)
        self.cases.append(case)
        self.case_tests.append(self.current_test)
        return case

    def summaries(self, outcomes: dict[str, str]) -> list:
        """The session's cases as summary rows, each with its test and that test's outcome."""
        from .harness import CaseSummary

        rows = []
        for c, test in zip(self.cases, self.case_tests):
            r = CaseSummary.of(c)
            r.test, r.outcome = test, outcomes.get(test) if test else None
            rows.append(r)
        return rows

    def reference(self, bundle, streaming: bool = False, model=None, patterns=None, mode=None):
        from .capture.runner import RunMode

        return self.harness.reference(model or self.model(), bundle, mode or RunMode(streaming), patterns)

    def report_dir(self) -> Path:
        """Where case pages go: beside the session page (``reports/x.html`` -> ``reports/x/``); a session page
        sent to a device or a pipe (``--parity-report=/dev/null``) has no directory beside it, so the case pages
        go where they go without ``--parity-report`` (``reports/pytest-parity/``)."""
        from .outputs import is_regular_output

        default = self.pc.rootdir / "reports" / "pytest-parity.html"
        base = self.pc.report_base or (Path(self.pc.report) if self.pc.report else default)
        return (base if is_regular_output(base) else default).with_suffix("")

    def write_case_report(self, case) -> Path:
        from .present.report import build_report

        if case.report is None:
            case.report = build_report(case.result, self.report_dir() / f"{case.name}.html", case=case)
        return case.report


def _harness(config) -> ParityHarness:
    if not hasattr(config, "_parity_harness"):
        config._parity_harness = ParityHarness(config._parity)
    return config._parity_harness


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """pytest-xdist controller: each worker writes its case reports under the name this session claimed."""
    pc = getattr(node.config, "_parity", None)
    if pc is not None and pc.report_base is not None:
        node.workerinput["parity_report_base"] = str(pc.report_base)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect the case summaries a worker ran (its ``workeroutput``); a worker that
    went down without them is named on the session page."""
    rows = (getattr(node, "workeroutput", None) or {}).get("parity_cases")
    if rows:
        node.config._parity_worker_cases = getattr(node.config, "_parity_worker_cases", []) + rows
    elif error:
        wid = (getattr(node, "gateway", None) and node.gateway.id) or "a worker"
        node.config._parity_lost = getattr(node.config, "_parity_lost", []) + [
            f"{wid} went down ({str(error).strip().splitlines()[-1] if str(error).strip() else 'no reason'}): "
            f"the cases it ran are missing from this page"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Which test is running: the cases it runs are counted by its outcome."""
    ps = _harness(item.config) if getattr(item.config, "_parity", None) else None
    if ps is not None:
        ps.current_test = item.nodeid
    try:
        yield
    finally:
        if ps is not None:
            ps.current_test = None


class OutcomeTally:
    """Every test's outcome by node id (on a pytest-xdist controller: every worker's tests, as their reports
    arrive; on a worker or a plain session: its own). Registered as a plugin object by ``pytest_configure``."""

    RANK = {"passed": 0, "xpassed": 0, "skipped": 1, "xfailed": 1, "failed": 2, "error": 3}

    def __init__(self):
        self.outcomes: dict[str, str] = {}

    @staticmethod
    def outcome_of(report) -> str | None:
        xf = hasattr(report, "wasxfail")
        if report.when == "call":
            if report.passed:
                return "xpassed" if xf else "passed"
            if report.skipped:
                return "xfailed" if xf else "skipped"
            return "failed"
        if report.failed:
            return "error"  # setup or teardown failed
        if report.skipped:
            return "xfailed" if xf else "skipped"
        return None

    def pytest_runtest_logreport(self, report):
        o = self.outcome_of(report)
        if o is None:
            return
        old = self.outcomes.get(report.nodeid)
        if old is None or self.RANK[o] > self.RANK[old]:
            self.outcomes[report.nodeid] = o

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
            n = sum(1 for v in self.outcomes.values() if v == k)
            if n:
                out[k] = n
        return out


def pytest_sessionfinish(session, exitstatus):
    """With ``--parity-report``: a report per failing case (written where the case ran) and one session page,
    written once: by the pytest-xdist controller from every worker's summaries, or by a plain session. A case
    counts by its test's outcome (an injected fault the test catches is a pass for the suite); the page shows
    the pytest exit status and the fault cases in a group of their own."""
    config = session.config
    if not getattr(config, "_parity", None) or not config._parity.report:
        return
    from .harness import CaseSummary

    tally: OutcomeTally = config._parity_tally
    ps = getattr(config, "_parity_harness", None)
    rows: list = []
    if ps is not None:
        for c in ps.cases:
            if c.verdict != "pass":
                try:
                    ps.write_case_report(c)
                except Exception as exc:  # noqa: BLE001 - a report failure must not hide the test results
                    c.report = None
                    print(f"\nparity: could not write the report of {c.name}: {exc}")
        rows = ps.summaries(tally.outcomes)
    if _is_xdist_worker(config):
        config.workeroutput["parity_cases"] = [r.to_json() for r in rows]
        return
    worker_rows = [CaseSummary.from_json(d) for d in getattr(config, "_parity_worker_cases", [])]
    for r in worker_rows:  # the controller saw every report: its tally is the word on each test
        if r.test and r.test in tally.outcomes:
            r.outcome = tally.outcomes[r.test]
    if worker_rows:  # workers finish in any order: list the cases by name
        rows = sorted(rows + worker_rows, key=lambda r: r.name)
    lost = list(getattr(config, "_parity_lost", []))
    if not rows and not lost:
        return
    from .present.report import build_summary_page, summary_banner

    info = {"exitstatus": int(exitstatus), "counts": tally.counts(), "notes": lost}
    path = build_summary_page(rows, Path(config._parity.report), session=info)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"parity: session report {path}: {summary_banner(rows, info)} ({len(rows)} cases)")


# ---------------------------------------------------------------------------------------------
# fixtures

@pytest.fixture(scope="session")
def parity_harness(request) -> "ParityHarness":
    """The pytest session's harness (:class:`ParityHarness`): its configuration, comparison spec, caches, and
    the cases it ran."""
    return _harness(request.config)


@pytest.fixture(scope="session")
def parity_session(parity_harness) -> "ParityHarness":
    """The same object as ``parity_harness`` (its name before the harness was called a harness)."""
    return parity_harness


@pytest.fixture(scope="session")
def parity_model(parity_harness):
    return parity_harness.model()


@pytest.fixture(scope="session")
def parity_policy(parity_harness):
    return parity_harness.policy()


@pytest.fixture
def parity_case(parity_harness, parity_case_spec):
    profile, bundle, mode = parity_case_spec
    return parity_harness.run(profile, bundle, mode=mode, overrides=parity_harness.pc.onnx.overrides())


@pytest.fixture
def parity_run(parity_harness):
    """``parity_run(profile, bundle, streaming=False, faults=(), patterns=None, local=True, mode=None)`` -> Case;
    ``mode``: a :class:`parity.capture.runner.RunMode` (``RunMode.streaming_session(options)`` for upstream's
    loop; default: one call, ``streaming``)."""
    def run(profile, bundle, streaming=False, faults=(), patterns=None, local=True, mode=None):
        return parity_harness.run(profile, bundle, streaming, tuple(faults), patterns=patterns, local=local,
                                  mode=mode)
    return run


@pytest.fixture
def parity_reference(parity_harness):
    """``parity_reference(bundle, streaming=False, patterns=None, mode=None)`` -> RunResult of the reference
    (cached per session)."""
    def ref(bundle, streaming=False, patterns=None, mode=None):
        return parity_harness.reference(bundle, streaming, patterns=patterns, mode=mode)
    return ref


@pytest.fixture
def assert_parity(parity_harness):
    """``assert_parity(case)``: passes when the comparison passes; otherwise writes the case's report and
    fails with the headline finding and the report path. ``assert_parity(case, expect="fail",
    finding=CODE, stage=STAGE)``: the case must fail with that finding as the headline (a known, diagnosed
    failure, e.g. :func:`parity.judge.mask.expected_outcome`); ``why`` is shown when it does not."""
    def check(case, expect: str = "pass", finding: str | None = None, stage: str | None = None,
              why: str | None = None):
        v = case.result.verdict
        fd = case.result.first_divergence
        wanted = finding is None or (fd is not None and fd.code == finding and (stage is None or fd.stage == stage))
        if v == expect and wanted:
            if finding is not None:
                case.result.case = dict(case.result.case or {}, expected={"verdict": expect, "finding": finding,
                                                                          "stage": stage, "why": why})
            return case
        if finding is not None:
            want = f"{expect.upper()} with headline {stage or '*'} [{finding}]" + (f" ({why})" if why else "")
            try:
                where = f"\n  report: {parity_harness.write_case_report(case)}"
            except Exception as exc:  # noqa: BLE001
                where = f"\n  (report not written: {exc})"
            pytest.fail(f"parity {v.upper()} for {case.name}, expected {want}: {case.result.headline_text()}{where}",
                        pytrace=False)
        try:
            path = parity_harness.write_case_report(case)
            where = f"\n  report: {path}"
        except Exception as exc:  # noqa: BLE001
            where = f"\n  (report not written: {exc})"
        pytest.fail(f"parity {v.upper()} for {case.name}: {case.result.headline_text()}{where}", pytrace=False)
    return check


@pytest.fixture(scope="session")
def parity_golden(parity_harness, request):
    from .golden import Golden

    return Golden(parity_harness, bool(request.config.getoption("--parity-update-golden")))


def pytest_report_header(config):
    pc = getattr(config, "_parity", None)
    if pc is None:
        return None
    return (f"parity: preset={pc.model_dir or pc.preset} profiles={','.join(pc.profiles)} device={pc.device}"
            + (f" report={pc.report}" if pc.report else ""))

