"""The run config carries the analysis block; a typo in it fails before any work."""

import pytest

from simulator.commands.run import check_analysis_block
from simulator.core.errors import ConfigError
from simulator.engine.config import default_arm, parse_config
from simulator.engine.run import validate


def _cfg(analysis):
    return parse_config({"arms": [default_arm("popularity", "control"), default_arm("itemknn", "treatment")],
                         "analysis": analysis})


def test_valid_analysis_block_is_stored_in_resolved_config():
    cfg = _cfg({"primary": "ctr", "guardrails": ["latency_ms"]})
    validate(cfg)
    check_analysis_block(cfg)
    assert '"analysis": {"guardrails": ["latency_ms"], "primary": "ctr"}' in cfg.resolved_json()


@pytest.mark.parametrize("block, message", [
    ({"primary": "ctrr"}, "unknown metric 'ctrr'"),
    ({"guardrails": ["nope"]}, "unknown metric 'nope'"),
])
def test_bad_analysis_block_fails_before_work(block, message):
    with pytest.raises(ConfigError, match=message):
        check_analysis_block(_cfg(block))
