"""Law forms: names, shapes, the paper's constants, gauge invariance, the registry."""

from __future__ import annotations

import numpy as np
import pytest

from forgetscale.laws import LAWS, LawForm, additive_varpro, get_law, paper_gauge, register_law

LLAMA2_7B_P_PER_RANK = 2_498_560  # LoRA on q,k,v,o,gate,up,down of Llama-2-7B, per unit rank

# the paper's reconstructed Eq. 5/6 constants (docs/inference.md)
OPENORCA = dict(a_f=3.88e5, a_ft=7e3, b_f=23.64, b_ft=72.92, c_ft=0.0020, c_fft=1.7334,
                s_ft=0.6126, s_fft=2.0481, alpha_f=0.0351, alpha_ft=0.0424, beta_f=0.1468,
                beta_ft=0.1219, rho=7.6885)
NEWS = dict(a_f=1.1e4, a_ft=2.2e4, b_f=97.85, b_ft=54.87, c_ft=0.0028, c_fft=1.0615,
            s_ft=1.9253, s_fft=3.1285, alpha_f=0.0458, alpha_ft=0.0383, beta_f=0.1044,
            beta_ft=0.1161, rho=7.5996)


def test_registry_has_the_design_forms_with_design_names():
    assert LAWS["linear"].params == ("c_fft", "s_fft")
    assert set(LAWS["paper"].params) == {
        "c_fft", "s_fft", "a_f", "a_ft", "b_f", "b_ft", "c_ft", "s_ft",
        "alpha_f", "alpha_ft", "beta_f", "beta_ft", "rho",
    }
    assert LAWS["kl_power"].params == ("A", "a", "b")
    assert LAWS["additive"].params == ("E", "A", "B", "alpha", "beta")
    assert LAWS["paper"].inputs == ("P", "N")
    assert LAWS["paper"].outputs == ("ft_loss", "forget_ce")
    assert LAWS["linear"].inputs == ("ft_loss",)
    assert LAWS["kl_power"].outputs == ("forget_kl",)


@pytest.mark.parametrize("name", ["linear", "paper", "kl_power", "additive"])
def test_predict_is_vectorised_over_points_and_parameter_batches(name):
    law = LAWS[name]
    rng = np.random.default_rng(0)
    x = rng.uniform(1.0, 100.0, size=(len(law.inputs), 7))
    theta = np.array([np.mean(law.grid.get(p, (0.5,))) for p in law.params])
    theta = np.where(theta == 0, 0.3, theta)
    batch = theta * rng.uniform(0.9, 1.1, size=(4, 3, law.n_params))
    out = law.predict(batch, x)
    assert out.shape == (4, 3, len(law.outputs), 7)
    one = law.predict(batch[2, 1], x[:, 5:6])
    np.testing.assert_allclose(one[:, 0], out[2, 1, :, 5], rtol=1e-12)


def test_linear_and_kl_power_values():
    np.testing.assert_allclose(LAWS["linear"].predict({"c_fft": 1.5, "s_fft": 2.0}, np.array([0.4])), [[1.4]])
    kl = LAWS["kl_power"].predict({"A": 2.0, "a": 0.5, "b": 1.0}, np.array([[16.0], [3.0]]))
    np.testing.assert_allclose(kl, [[24.0]])


def test_overflow_gives_inf_without_warnings():
    # pytest turns warnings into errors: a RuntimeWarning here would fail the test
    out = LAWS["additive"].predict({"E": 1, "A": 1, "B": 1, "alpha": 5, "beta": 5},
                                   np.array([[1e-300], [1.0]]))
    assert np.isinf(out).all()


def test_theta_rejects_missing_and_unknown_names():
    with pytest.raises(ValueError, match="missing"):
        LAWS["linear"].theta({"c_fft": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        LAWS["linear"].theta({"c_fft": 1.0, "s_fft": 1.0, "rho": 2.0})


def _paper_grid(consts):
    ranks = np.array([8.0, 256.0])
    steps = np.array([50.0, 260.0])
    P, N = np.meshgrid(ranks * LLAMA2_7B_P_PER_RANK, steps, indexing="ij")
    return LAWS["paper"].predict(consts, np.array([P.ravel(), N.ravel()])).reshape(2, 2, 2)


def test_paper_constants_reproduce_openorca_ranges():
    out = _paper_grid(OPENORCA)  # (output, rank, step)
    ft, forget = out
    # paper: fine-tuning loss ~0.77 -> 0.65, forgetting ~0.71 -> 0.92 over ranks 8-256, N 50-260
    assert ft[0, 0] == pytest.approx(0.77, abs=0.01)
    assert ft[1, 1] == pytest.approx(0.65, abs=0.01)
    assert forget[0, 0] == pytest.approx(0.71, abs=0.01)
    assert forget[1, 1] == pytest.approx(0.92, abs=0.01)
    assert ft.max() == ft[0, 0] and ft.min() == ft[1, 1]
    assert forget.min() == forget[0, 0] and forget.max() == forget[1, 1]


def test_paper_constants_for_news_are_monotone_and_plausible():
    ft, forget = _paper_grid(NEWS)
    # measured through these constants: ft 2.15 -> 1.99, forgetting 0.85 -> 1.02
    assert ft[0, 0] == pytest.approx(2.15, abs=0.01)
    assert ft[1, 1] == pytest.approx(1.99, abs=0.01)
    assert forget[0, 0] == pytest.approx(0.845, abs=0.01)
    assert forget[1, 1] == pytest.approx(1.017, abs=0.01)
    assert (np.diff(ft, axis=0) < 0).all() and (np.diff(ft, axis=1) < 0).all()
    assert (np.diff(forget, axis=0) > 0).all() and (np.diff(forget, axis=1) > 0).all()


def test_paper_forgetting_is_eq4_of_eq5_when_shapes_coincide():
    # with a_f = a_ft etc., Eq. 6 is exactly Eq. 4 applied to Eq. 5
    c = dict(OPENORCA, a_f=OPENORCA["a_ft"], b_f=OPENORCA["b_ft"], alpha_f=OPENORCA["alpha_ft"],
             beta_f=OPENORCA["beta_ft"])
    x = np.array([[2e7, 3e8], [60.0, 200.0]])
    ft, forget = LAWS["paper"].predict(c, x)
    np.testing.assert_allclose(forget, -c["c_fft"] * ft + c["s_fft"], rtol=1e-12)


def test_paper_gauge_leaves_predictions_unchanged():
    law = LAWS["paper"]
    theta = law.theta(OPENORCA)
    k = 1.7
    moved = dict(OPENORCA)
    for a, e in (("a_ft", "alpha_ft"), ("b_ft", "beta_ft"), ("a_f", "alpha_f"), ("b_f", "beta_f")):
        moved[a] = OPENORCA[a] * k ** (1 / OPENORCA[e])
    moved["c_ft"] = OPENORCA["c_ft"] * k ** -OPENORCA["rho"]
    x = np.array([[2e7, 6e8, 1e6], [50.0, 260.0, 5.0]])
    np.testing.assert_allclose(law.predict(moved, x), law.predict(theta, x), rtol=1e-10)
    canon = paper_gauge(law.theta(moved))
    assert canon[law.params.index("b_ft")] == 1.0
    np.testing.assert_allclose(law.predict(canon, x), law.predict(theta, x), rtol=1e-10)
    assert law.canonical is None  # fits are reported in the fitting gauge (bounded scales)


def test_paper_scales_stay_within_bounds_as_the_exponent_goes_to_zero():
    # The alpha -> 0 limit: the optimiser's term coordinate alpha * (log a - centre) stays
    # finite while log a = centre + term / alpha runs off. Decoding clamps a to its bounds.
    from forgetscale.laws.forms import Coords

    law = LAWS["paper"]
    x = np.array([[1e5, 1e6, 1e7], [10.0, 20.0, 40.0]])
    theta = law.theta(dict(OPENORCA, alpha_f=1e-4))
    coords = Coords.at(law, {}, np.ones(law.n_params), x)
    z = coords.encode(theta)
    z[law.params.index("a_f")] = 40.0  # a term of e^40 at the centre needs log a ~ 4e5 at alpha 1e-4
    back = coords.decode(z)
    lo, hi = law.bounds["a_f"]
    assert back[law.params.index("a_f")] == pytest.approx(hi, rel=1e-9)
    assert np.isfinite(law.predict(back, x)).all()


def test_additive_varpro_finds_exponents_and_signs():
    P = np.repeat(np.geomspace(1e5, 1e8, 6), 6)
    N = np.tile(np.geomspace(2, 500, 6), 6)
    rising = 2.5 - 30 * P**-0.3 - 1.5 * N**-0.5  # forgetting that saturates upwards: A, B < 0
    start = additive_varpro(np.array([P, N]), rising[None])[0]
    assert start[1] < 0 and start[2] < 0
    assert start[3] == pytest.approx(0.3, rel=0.15)
    assert start[4] == pytest.approx(0.5, rel=0.15)


def test_register_law_is_open_but_refuses_silent_overwrite():
    form = LawForm(
        name="_test_const", inputs=("P",), outputs=("forget_ce",), params=("c",),
        fn=lambda th, x: np.broadcast_to(th[..., 0, None], th.shape[:-1] + x.shape[1:])[..., None, :],
        bounds={"c": (0.0, 10.0)}, grid={"c": (1.0,)},
    )
    try:
        assert register_law(form) is form
        assert get_law("_test_const") is form
        with pytest.raises(ValueError, match="already registered"):
            register_law(form)
        register_law(form, replace=True)
    finally:
        LAWS.pop("_test_const", None)
    with pytest.raises(KeyError, match="known: "):
        get_law("_test_const")


def test_lawform_validates_its_declaration():
    with pytest.raises(ValueError, match="no bounds"):
        LawForm(name="x", inputs=("P",), outputs=("y",), params=("a",), fn=lambda t, x: x,
                bounds={}, grid={})

