"""The verdicts follow the measurements: a diverged cell, the loss at the floor, thresholds never
reached, ties, intermediate depths and results on the mean that most seeds do not share."""

import pytest

from reslab.runs import gather


def test_diverged_cell_verdict_does_not_say_run_it_again():
    from reslab.verdicts import next_step

    assert "run the same command again" not in next_step("diverged") and "--lr" in next_step("diverged")
    assert "run the same command again" in next_step("interrupted")


# ---------------------------------------------------------------------------------------------
# verdicts that follow from the measurements (issues 15.12 and 17.2)


def verdicts_of(tmp_path, nets, losses=None):
    from test_experiment import fake_run

    from reslab.summary import summarize
    from reslab.verdicts import degradation_verdicts

    for arch, depth, train_errors in nets:
        fake_run(tmp_path, arch, depth, 0, train_errors, 0.2, train_loss=(losses or {}).get((arch, depth), 1.0))
    return {v.claim.split(" (")[0]: v for v in degradation_verdicts(summarize(tmp_path), gather(tmp_path)[0])}


@pytest.mark.parametrize("deep_loss, holds", [(0.0195, True), (0.0205, False), (0.004, True)])
def test_both_residual_nets_at_zero_training_error_are_told_apart_by_their_loss(tmp_path, deep_loss, holds):
    nets = [("plain", 8, [0.5, 0.0]), ("plain", 14, [0.5, 0.3]), ("resnet", 8, [0.5, 0.0]), ("resnet", 14, [0.5, 0.0])]
    v = verdicts_of(tmp_path, nets, {("resnet", 8): 0.01, ("resnet", 14): deep_loss})
    floor = v["Deeper residual nets do not degrade"]
    assert floor.holds is holds  # within 0.01 nats of the shallower net's loss counts as no degradation
    assert "final training loss" in floor.text and f"ResNet-14 {deep_loss:.4f}, ResNet-8 0.0100" in floor.text


def test_removing_the_degradation_is_not_claimed_without_a_second_residual_depth(tmp_path):
    v = verdicts_of(tmp_path, [("plain", 8, [0.5, 0.1]), ("plain", 14, [0.5, 0.3]), ("resnet", 14, [0.5, 0.1])])
    assert "Deeper residual nets do not degrade" not in v
    assert "removes the degradation" not in v["Shortcuts help at depth 14"].text


# ---------------------------------------------------------------------------------------------
# verdicts over seeds: thresholds never reached, ties, intermediate depths, the mean


def seeded_verdicts(tmp_path, nets):
    """nets: (arch, depth, seed, train_errors); reach thresholds come from the curves."""
    from test_experiment import fake_run

    from reslab.summary import summarize
    from reslab.verdicts import degradation_verdicts

    for arch, depth, seed, train_errors in nets:
        fake_run(tmp_path, arch, depth, seed, train_errors, 0.2)
    return {v.claim.split(" (")[0]: v for v in degradation_verdicts(summarize(tmp_path), gather(tmp_path)[0])}


def test_a_resnet_that_never_reaches_the_threshold_is_a_no_not_left_out(tmp_path):
    nets = [("plain", 8, 0, [0.5, 0.01]), ("resnet", 8, 0, [0.5, 0.01])]  # the threshold: 1%
    nets += [("plain", 14, 0, [0.5, 0.01]), ("resnet", 14, 0, [0.5, 0.3])]
    faster = seeded_verdicts(tmp_path, nets)["Residual nets converge faster"]
    assert faster.holds is False and "ResNet-14 never does" in faster.text


def test_reaching_the_threshold_at_the_same_evaluation_is_unclear(tmp_path):
    v = seeded_verdicts(tmp_path, [("plain", 8, 0, [0.5, 0.01]), ("resnet", 8, 0, [0.5, 0.01])])
    assert v["Residual nets converge faster"].holds is None


def test_an_intermediate_depth_that_degrades_is_seen(tmp_path):
    v = seeded_verdicts(
        tmp_path, [("resnet", 8, 0, [0.5, 0.10]), ("resnet", 14, 0, [0.5, 0.30]), ("resnet", 20, 0, [0.5, 0.10])]
    )
    verdict = v["Deeper residual nets do not degrade"]
    assert verdict.holds is False and "ResNet-14 is worse than ResNet-8" in verdict.text
    assert "by depth 8: 10.0%, 14: 30.0%, 20: 10.0%" in verdict.text


def test_a_verdict_on_the_mean_that_most_seeds_do_not_share_is_unclear(tmp_path):
    nets = [("plain", 8, s, [0.5, 0.10]) for s in range(3)]
    nets += [("plain", 14, 0, [0.5, 0.60]), ("plain", 14, 1, [0.5, 0.10]), ("plain", 14, 2, [0.5, 0.10])]
    verdict = seeded_verdicts(tmp_path, nets)["Deeper plain nets degrade"]
    assert "1 of 3 seeds" in verdict.text and verdict.holds is None and "mean only" in verdict.text
