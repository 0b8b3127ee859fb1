"""The contract fixture (filter/tests/fixtures/filter-config.json) as the benches run it: never
refusing, its `global` rule as shipped or every rule `local`. `bench/sidecar` part 3 measures
it under load, `bench/filter/instructions.py` (configurations g and L) in instructions."""

import copy
import json

# Far above anything a run sends, so no rule that matches every request ever refuses.
HUGE = 1_000_000_000


def never_refusing(fixture_path, all_local=False):
    """The fixture as it is (per-tenant `global`, reports `strict`), with the limits of the
    rules that match every request and every plan raised to 10⁹ a minute (their bursts then
    default to that) so that the load is never refused; `all_local` makes every rule's scope
    `local` and changes nothing else. failure_mode closed: a failed sidecar call is a 503."""
    with open(fixture_path) as f:
        config = copy.deepcopy(json.load(f))
    for plan in config.get("plans", {}).values():
        plan["requests_per_minute"] = HUGE
    for rule in config["rules"]:
        if "match" not in rule:
            if rule.get("limit") != "plan":
                rule["limit"] = HUGE
            rule.pop("burst", None)
        if all_local:
            rule["scope"] = "local"
    config["failure_mode"] = "closed"
    return config
