"""Optimizers (fused flat-buffer kernels), lr schedulers and clip_grad_norm_ against torch.optim."""

import math

import pytest
import torch
from tinydl.kernels import optim as _k

import tinydl as td
from tinydl import nn, optim
from tinydl.nn.utils import clip_grad_norm_
from tinydl.optim import lr_scheduler

# odd sizes around the GPU block (1024) are pointless in the interpreter; primes and 1 are not
SHAPES = [(7, 13), (1,), (129,), (3, 5), (4,)]
NO_GRAD = 4  # this parameter never gets a gradient
STEPS = 100


def _grads(step: int):
    """A deterministic gradient sequence, the same for both sides (fp32)."""
    g = torch.Generator(torch.get_default_device()).manual_seed(1000 + step)
    return [torch.randn(s, generator=g) for s in SHAPES]


def _run_pair(make_td, make_torch, steps=STEPS, skip=(NO_GRAD,), sparse_every=None):
    gen = torch.Generator(torch.get_default_device()).manual_seed(7)
    init = [torch.randn(s, generator=gen) for s in SHAPES]
    tp = [td.Tensor(x.clone(), requires_grad=True) for x in init]
    rp = [x.clone().requires_grad_() for x in init]
    o, r = make_td(tp), make_torch(rp)
    for step in range(steps):
        for i, (a, b, g) in enumerate(zip(tp, rp, _grads(step))):
            # a parameter that only sometimes has a gradient (different step counts per param)
            off = i in skip or (sparse_every and i == 1 and step % sparse_every == 0)
            a.grad = None if off else g.clone()
            b.grad = None if off else g.clone()
        o.step()
        r.step()
    return tp, rp, o, r


def _assert_traj(tp, rp, rtol=1e-5, atol=1e-6):
    for i, (a, b) in enumerate(zip(tp, rp)):
        torch.testing.assert_close(a.data, b.detach(), rtol=rtol, atol=atol, msg=lambda m, i=i: f"param {i}: {m}")


SGD_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(lr=0.05, momentum=0.5, maximize=True),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_follows_torch(kw):
    # one case also has a parameter whose gradient is sometimes None (its buffer starts later)
    sparse = 7 if kw.get("dampening") else None
    tp, rp, o, r = _run_pair(lambda p: optim.SGD(p, **kw), lambda p: torch.optim.SGD(p, **kw), sparse_every=sparse)
    _assert_traj(tp, rp)
    assert torch.equal(tp[NO_GRAD].data, rp[NO_GRAD].detach())  # never had a grad: untouched
    if kw.get("momentum"):
        for i, p in enumerate(tp):
            if i == NO_GRAD:
                assert p not in o.state
            else:
                torch.testing.assert_close(o.state[p]["momentum_buffer"], r.state[rp[i]]["momentum_buffer"],
                                           rtol=1e-5, atol=1e-6)


ADAM_CASES = [
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.3, 0.9), maximize=True, amsgrad=True)),  # beta1 < 0.5: lerp's other branch
    ("AdamW", dict(lr=1e-2, amsgrad=True)),  # default weight_decay=1e-2
    ("AdamW", dict(lr=1e-2, betas=(0.85, 0.95), weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("cls,kw", ADAM_CASES, ids=lambda c: c if isinstance(c, str) else
                         ",".join(f"{k}={v}" for k, v in c.items()))
def test_adam_follows_torch(cls, kw):
    # the amsgrad+weight_decay case also has a parameter whose gradient is sometimes None, so
    # parameters reach different step counts (and bias corrections) within one group
    sparse = 5 if kw.get("weight_decay") and cls == "Adam" else None
    tp, rp, o, r = _run_pair(lambda p: getattr(optim, cls)(p, **kw), lambda p: getattr(torch.optim, cls)(p, **kw),
                             sparse_every=sparse)
    _assert_traj(tp, rp)
    assert torch.equal(tp[NO_GRAD].data, rp[NO_GRAD].detach())
    for i, p in enumerate(tp):
        if i == NO_GRAD:
            assert p not in o.state
            continue
        assert o.state[p]["step"].item() == r.state[rp[i]]["step"].item()
        names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])
        assert sorted(o.state[p]) == sorted(r.state[rp[i]])
        for n in names:
            torch.testing.assert_close(o.state[p][n], r.state[rp[i]][n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls,kw", [("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
                                    ("AdamW", dict(lr=1e-2, betas=(0.3, 0.9), maximize=True))], ids=["Adam", "AdamW"])
def test_capturable_adam_follows_torch(cls, kw):
    # the step count lives on the device and the kernel computes the bias corrections from it
    steps = 30  # the bias corrections still matter (beta2 = 0.9 or 0.999)
    tp, rp, o, r = _run_pair(lambda p: getattr(optim, cls)(p, capturable=True, **kw),
                             lambda p: getattr(torch.optim, cls)(p, **kw), steps=steps, skip=())
    _assert_traj(tp, rp)
    counts = {o.state[p]["step"].data_ptr() for p in tp}
    assert len(counts) == 1 and o.state[tp[0]]["step"].device == tp[0].data.device  # one count per group
    assert all(o.state[p]["step"].item() == steps for p in tp)
    # its state_dict continues in a non-capturable Adam (and in torch.optim) with the same trajectory
    sd = o.state_dict()
    assert sd["param_groups"][0]["capturable"] is True
    o2 = getattr(optim, cls)(tp, **kw)
    o2.load_state_dict(sd)
    o2.param_groups[0]["capturable"] = False
    r.load_state_dict({"state": sd["state"], "param_groups": [dict(g, capturable=False) for g in sd["param_groups"]]})
    for step in range(steps, steps + 5):
        for a, b, g in zip(tp, rp, _grads(step)):
            a.grad, b.grad = g.clone(), g.clone()
        o2.step()
        r.step()
    _assert_traj(tp, rp)


def test_capturable_adam_needs_every_gradient():
    ps = [td.Tensor(torch.randn(s), requires_grad=True) for s in SHAPES]
    opt = optim.Adam(ps, lr=0.1, capturable=True)
    for p in ps:
        p.grad = torch.randn(p.shape)
    ps[2].grad = None
    before = [p.data.clone() for p in ps]
    with pytest.raises(RuntimeError, match=r"parameter 2 of a group \(shape \(129,\)\) has no gradient"):
        opt.step()
    assert all(torch.equal(a, p.data) for a, p in zip(before, ps))  # nothing was updated
    # per-parameter counts from a state_dict that differ cannot become one device count
    plain = optim.Adam(ps, lr=0.1)
    ps[2].grad = None
    plain.step()
    ps[2].grad = torch.randn(129)
    plain.step()
    opt.load_state_dict(plain.state_dict())
    opt.param_groups[0]["capturable"] = True
    with pytest.raises(RuntimeError, match=r"different step counts \[1.0, 2.0\]"):
        opt.step()


def test_one_launch_per_group_step(monkeypatch):
    calls = []
    real = _k.adam_step
    monkeypatch.setattr(_k, "adam_step", lambda *a, **k: (calls.append(a[0].numel()), real(*a, **k)))
    ps = [td.Tensor(torch.randn(s), requires_grad=True) for s in SHAPES]
    opt = optim.Adam(ps, lr=0.1)
    for p in ps:
        p.grad = torch.randn(p.shape)
    opt.step()
    opt.step()
    # one launch over the whole bucket: every parameter, plus < 4 fp32 of alignment padding each
    (b,) = opt._buckets[0]
    n = sum(math.prod(s) for s in SHAPES)
    assert calls == [b.ends[-1]] * 2 and n <= b.ends[-1] < n + 4 * len(SHAPES)
    # params and states are views of one flat buffer per group
    base = ps[0].data._base
    assert base is not None and all(p.data._base is base for p in ps)


def test_lr_change_is_a_runtime_scalar_and_groups():
    a, b = td.Tensor(torch.ones(5), requires_grad=True), td.Tensor(torch.ones(3), requires_grad=True)
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    for lr in (0.1, 0.2):
        opt.param_groups[0]["lr"] = lr
        a.grad, b.grad = torch.ones(5), torch.ones(3)
        opt.step()
    torch.testing.assert_close(a.data, torch.full((5,), 1 - 0.1 - 0.2))
    torch.testing.assert_close(b.data, torch.full((3,), 0.0))


def test_module_and_state_dict_see_the_flat_buffer():
    td.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = td.Tensor(torch.randn(4, 5))
    out = model(x)
    out.backward(torch.ones(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt.step()
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    # the model computes with the updated (flat-buffer) weights
    ref = torch.relu(x.data @ after["0.weight"].T + after["0.bias"]) @ after["2.weight"].T + after["2.bias"]
    torch.testing.assert_close(model(x).data, ref)
    # load_state_dict writes into the views the optimizer updates
    model.load_state_dict(before)
    assert torch.equal(model[0].weight.data, before["0.weight"])
    # Module.to re-points p.data: the optimizer rebuilds its buffers and keeps the momentum
    model.to(dtype=torch.float32)
    for p in model.parameters():
        p.grad = torch.zeros(p.shape)
    w = model[0].weight.data.clone()
    buf = opt.state[model[0].weight]["momentum_buffer"].clone()
    opt.step()
    torch.testing.assert_close(model[0].weight.data, w - 0.1 * 0.9 * buf)


def test_zero_grad_in_place_accumulates_into_flat_grad():
    ps = [td.Tensor(torch.randn(s), requires_grad=True) for s in SHAPES[:3]]
    rp = [p.data.clone().requires_grad_() for p in ps]
    opt, ropt = optim.SGD(ps, lr=0.1, momentum=0.9), torch.optim.SGD(rp, lr=0.1, momentum=0.9)
    for step in range(3):
        for p, r, g in zip(ps, rp, _grads(step)):
            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
            r.grad = g.clone() if r.grad is None else r.grad.add_(g)
        opt.step()
        ropt.step()
        opt.zero_grad(set_to_none=False)
        ropt.zero_grad(set_to_none=False)
        assert all(torch.equal(p.grad, torch.zeros(p.shape)) for p in ps)
    _assert_traj(ps, rp)


def test_fresh_gradients_are_gathered_by_one_cat(monkeypatch):
    # after zero_grad() (set_to_none) every gradient is a new tensor: the step gathers them into
    # the flat buffer with one torch.cat, not a copy kernel per parameter; otherwise, copies.
    # (Counted inside the gather only: the interpreter's own launches copy tensors too.)
    from torch.utils._python_dispatch import TorchDispatchMode

    from tinydl.optim import optimizer as optmod

    ops = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    real = optmod._gather_grads

    def counted(b, fresh):
        with Count():
            real(b, fresh)

    monkeypatch.setattr(optmod, "_gather_grads", counted)
    ps = [td.Tensor(torch.randn(s), requires_grad=True) for s in SHAPES[:3]]
    rp = [p.data.clone().requires_grad_() for p in ps]
    opt, ropt = optim.SGD(ps, lr=0.1, momentum=0.9), torch.optim.SGD(rp, lr=0.1, momentum=0.9)
    for step in range(3):
        for p, r, g in zip(ps, rp, _grads(step)):
            p.grad, r.grad = g.clone(), g.clone()
        if step == 1:  # a non-contiguous gradient (same values): per-parameter copies
            ps[0].grad = ps[0].grad.t().contiguous().t()
            assert not ps[0].grad.is_contiguous()
        ops.clear()
        opt.step()
        ropt.step()
        gathers = [op for op in ops if op in ("cat", "copy_")]
        assert gathers == (["copy_"] * 3 if step == 1 else ["cat"]), (step, ops)
        opt.zero_grad()
        ropt.zero_grad()
    _assert_traj(ps, rp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_parameters_are_16_byte_aligned_and_gaps_stay_zero(dtype):
    # kernels read parameters through the bucket's views: Triton vectorises only 16-byte-aligned
    # pointers. The gaps this leaves must stay 0 under every update (Adam + weight decay here).
    ps = [td.Tensor(torch.randn(s).to(dtype), requires_grad=True) for s in SHAPES]
    opt = optim.Adam(ps, lr=0.1, weight_decay=0.1, amsgrad=True)
    for step in range(3):
        for p, g in zip(ps, _grads(step)):
            p.grad = g.to(dtype)
        opt.step()
    (b,) = opt._buckets[0]
    assert all(p.data.data_ptr() % 16 == 0 for p in ps)
    assert b.starts[1] > b.ends[0]  # (7, 13) = 91 elements: there is a gap to check
    gaps = torch.ones(b.data.numel(), dtype=torch.bool)
    for i in range(len(ps)):
        gaps[b.piece(i)] = False
    for buf in [b.data, b.grad, *b.states.values()]:
        assert torch.equal(buf[gaps], torch.zeros(int(gaps.sum()), dtype=dtype))


def test_optimizer_state_dict_round_trip_and_torch_format():
    tp, rp, o, r = _run_pair(lambda p: optim.Adam(p, lr=1e-2, amsgrad=True),
                             lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True), steps=5)
    sd, rsd = o.state_dict(), r.state_dict()
    assert sorted(sd["state"]) == sorted(rsd["state"])
    assert sd["param_groups"][0]["params"] == rsd["param_groups"][0]["params"]
    assert {k for k in sd["param_groups"][0]} >= {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"}
    # a torch.optim state_dict loads into tinydl, and they continue together
    o2 = optim.Adam([td.Tensor(p.detach().clone(), requires_grad=True) for p in rp], lr=1.0)
    o2.load_state_dict(rsd)
    assert o2.param_groups[0]["lr"] == 1e-2
    tp2 = o2.param_groups[0]["params"]
    for step in range(5, 10):
        for i, (a, b, g) in enumerate(zip(tp2, rp, _grads(step))):
            a.grad = None if i == NO_GRAD else g.clone()
            b.grad = None if i == NO_GRAD else g.clone()
        o2.step()
        r.step()
    _assert_traj(tp2, rp)
    # and tinydl's loads into torch.optim
    r3 = torch.optim.Adam([p.data.clone().requires_grad_() for p in tp], lr=1.0)
    r3.load_state_dict(o.state_dict())
    assert r3.state_dict()["state"][0]["step"].item() == 5


def test_load_state_dict_mismatch_leaves_optimizer_unchanged():
    ps = [td.Tensor(torch.randn(3), requires_grad=True)]
    opt = optim.SGD(ps, lr=0.1)
    other = optim.SGD([td.Tensor(torch.randn(3), requires_grad=True) for _ in range(2)], lr=0.5).state_dict()
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(other)
    bad = {"state": {0: {"momentum_buffer": torch.zeros(4)}}, "param_groups": opt.state_dict()["param_groups"]}
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict(bad)
    assert opt.param_groups[0]["lr"] == 0.1 and not opt.state


def test_nonfinite_gradient_propagates_like_torch():
    """Documented behaviour: no check in step(); NaN/inf propagate elementwise as in torch.optim.
    clip_grad_norm_(error_if_nonfinite=True) is the opt-in guard (it raises before changing anything)."""
    g = torch.tensor([1.0, float("nan"), float("inf"), -2.0])
    for mk, rk in ((lambda p: optim.Adam(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1)),
                   (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))):
        a, b = td.Tensor(torch.ones(4), requires_grad=True), torch.ones(4, requires_grad=True)
        o, r = mk([a]), rk([b])
        a.grad, b.grad = g.clone(), g.clone()
        o.step()
        r.step()
        torch.testing.assert_close(a.data, b.detach(), equal_nan=True)
    p = td.Tensor(torch.ones(4), requires_grad=True)
    p.grad = g.clone()
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    torch.testing.assert_close(p.grad, g, equal_nan=True)  # unchanged: the error comes before any scaling


@pytest.mark.parametrize("make,msg", [
    (lambda p: optim.SGD(p, lr=-0.1), "Invalid learning rate"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "Invalid momentum"),
    (lambda p: optim.SGD(p, lr=0.1, weight_decay=-1), "Invalid weight_decay"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.Adam(p, lr=-1e-3), "Invalid learning rate"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: optim.AdamW(p, eps=-1e-8), "Invalid epsilon"),
    (lambda p: optim.AdamW(p, weight_decay=-0.1), "Invalid weight_decay"),
    (lambda p: optim.Adam(p, lr=float("nan")), "learning rate"),
    (lambda p: optim.SGD([{"params": p, "lr": -1.0}], lr=0.1), "Invalid learning rate"),
])
def test_invalid_hyperparameters(make, msg):
    with pytest.raises(ValueError, match=msg):
        make([td.Tensor(torch.zeros(2), requires_grad=True)])


def test_bad_params():
    for cls in (optim.SGD, optim.Adam, optim.AdamW):
        with pytest.raises(ValueError, match="empty parameter list"):
            cls([], lr=0.1)
    p = td.Tensor(torch.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(TypeError, match="tinydl Tensors"):
        optim.SGD([torch.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD([p], lr="0.1")


# ------------------------------------------------------------------------------------------------
# Schedulers
# ------------------------------------------------------------------------------------------------

SCHEDS = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)),
    ("LambdaLR", dict(lr_lambda=lambda e: 0.95 ** e)),
]


@pytest.mark.parametrize("name,kw", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_schedulers_follow_torch(name, kw):
    p = td.Tensor(torch.zeros(2), requires_grad=True)
    o = optim.SGD([p], lr=0.1)
    ro = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    s, rs = getattr(lr_scheduler, name)(o, **kw), getattr(torch.optim.lr_scheduler, name)(ro, **kw)
    assert s.get_last_lr() == pytest.approx(rs.get_last_lr(), rel=1e-12)
    for _ in range(20):
        ro.step()
        rs.step()
        s.step()
        assert s.get_last_lr() == pytest.approx(rs.get_last_lr(), rel=1e-12, abs=1e-15)
        assert o.param_groups[0]["lr"] == s.get_last_lr()[0]
    # state_dict round trip: a fresh scheduler continues identically
    sd = s.state_dict()
    assert "optimizer" not in sd
    o2 = optim.SGD([td.Tensor(torch.zeros(2), requires_grad=True)], lr=0.1)
    s2 = getattr(lr_scheduler, name)(o2, **kw)
    s2.load_state_dict(sd)
    o2.param_groups[0]["lr"] = o.param_groups[0]["lr"]
    s.step()
    s2.step()
    assert s2.get_last_lr() == s.get_last_lr()


def test_scheduler_errors():
    o = optim.SGD([td.Tensor(torch.zeros(2), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(o, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(o, T_max=0)
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(o, step_size=2, last_epoch=3)
    with pytest.raises(TypeError, match="not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)


# ------------------------------------------------------------------------------------------------
# clip_grad_norm_
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    grads = _grads(0)
    tp = [td.Tensor(torch.zeros(s), requires_grad=True) for s in SHAPES]
    rp = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    for i, (a, b, g) in enumerate(zip(tp, rp, grads)):
        if i != NO_GRAD:
            a.grad, b.grad = g.clone(), g.clone()
    tn = clip_grad_norm_(tp, max_norm, norm_type)
    rn = torch.nn.utils.clip_grad_norm_(rp, max_norm, norm_type)
    torch.testing.assert_close(tn, rn, rtol=1e-5, atol=0)
    for i, (a, b) in enumerate(zip(tp, rp)):
        if i != NO_GRAD:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert tp[NO_GRAD].grad is None


def test_clip_grad_norm_edge_cases():
    p = td.Tensor(torch.zeros(3), requires_grad=True)
    assert clip_grad_norm_([p], 1.0).item() == 0.0  # no grads at all
    p.grad = torch.zeros(3)
    assert clip_grad_norm_(p, 1.0).item() == 0.0 and torch.equal(p.grad, torch.zeros(3))
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    assert math.isnan(clip_grad_norm_([p], 1.0, norm_type=float("inf")).item())
    with pytest.raises(ValueError, match="norm_type"):
        clip_grad_norm_([p], 1.0, norm_type=-1)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([p], "1")


# --- found in review ------------------------------------------------------------------------------

def test_float64_parameters_are_rejected():
    with pytest.raises(TypeError, match="float64"):
        optim.SGD([td.Tensor(torch.zeros(3, dtype=torch.float64), requires_grad=True)], lr=0.1)


def test_replacing_a_parameter_in_a_group_takes_effect():
    a = td.Tensor(torch.zeros(3), requires_grad=True)
    b = td.Tensor(torch.zeros(3), requires_grad=True)
    opt = optim.SGD([a], lr=1.0)
    a.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["params"][0] = b
    b.grad = torch.ones(3)
    opt.step()
    assert b.data.tolist() == [-1.0, -1.0, -1.0] and a.data.tolist() == [-1.0, -1.0, -1.0]


def test_module_to_keeps_grads_and_zero_grad_is_in_place():
    model = nn.Linear(3, 2)
    model.weight.grad = torch.ones(2, 3)
    model.to(torch.float32)
    assert model.weight.grad is not None and model.weight.grad.tolist() == [[1.0] * 3] * 2
    ref = model.weight.grad
    model.zero_grad(set_to_none=False)
    assert model.weight.grad is ref and ref.abs().sum().item() == 0
