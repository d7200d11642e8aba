"""Configuration: files, overrides, resolution, fingerprints and one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import ConfigError, ExperimentConfig, load_config, resolve


def test_defaults_resolve_to_the_embedded_digits_job():
    config = resolve(ExperimentConfig())
    assert (config.arch, config.dataset, config.pairs) == ("lenet5", "digits", 2)
    assert config.recipe_a.name == config.recipe_b.name == "lenet5-digits"
    assert config.preset == "lenet5-digits"
    assert config.continuity.samples_per_segment == 10 and config.continuity.train_subset == 512
    assert config.m2m.momentum == 0 and config.m2m.weight_decay == 0  # plain SGD
    assert [p.layers for p in config.phases] == [["*"]]
    assert config.seeds(3) == (6, 7)


def test_a_file_and_overrides_combine_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('pairs = 5\nname = "from-file"\n[m2m]\nlr = 0.02\nmax_rounds = 7\n')
    config = resolve(load_config(path, {"pairs": 3, "m2m": {"max_rounds": 9}}))
    assert (config.pairs, config.name) == (3, "from-file")
    assert (config.m2m.lr, config.m2m.max_rounds) == (0.02, 9)
    assert config.m2m.batch_size == 64  # still the preset's


def test_fingerprint_ignores_resources_but_not_settings():
    base = resolve(ExperimentConfig())
    more_cpus = resolve(ExperimentConfig(resources={"num_cpus": 2}))
    other = resolve(ExperimentConfig(pairs=3))
    assert base.fingerprint() == more_cpus.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arch": "resnet19"}, "unknown architecture 'resnet19'; valid architectures: lenet5"),
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; valid datasets: cifar10"),
        ({"pairs": 0}, "pairs: Input should be greater than or equal to 1"),
        ({"m2m": {"lr": -1}}, "lr: Input should be greater than 0"),
        ({"m2m": {"lr_typo": 1}}, "lr_typo: Extra inputs are not permitted"),
        ({"recipe_a": "nope"}, "unknown recipe 'nope'; valid recipes: cct7-cifar10"),
        ({"preset": "nope"}, "unknown preset 'nope'; valid presets:"),
        ({"arch": "resnet18", "dataset": "digits"}, "resnet18 is built for cifar10, cifar100"),
    ],
)
def test_bad_values_name_the_field_and_the_valid_choices(fields, message):
    with pytest.raises(ConfigError) as caught:
        resolve(load_config(None, fields))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_file_contents_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("pairs: [1,\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_config(broken, {})
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(listed, {})


def test_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app, ["submit", "--arch", "resnet19", "--db", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: arch: unknown architecture 'resnet19'")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite:////no/such/dir/llpf.db", "directory '/no/such/dir' does not exist"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot open database"),
        ("nosuchdb://x", "cannot open database 'nosuchdb://x'"),
    ],
)
def test_an_unopenable_database_is_one_line(url, reason):
    result = CliRunner().invoke(app, ["status", "--db", url])
    assert result.exit_code == 2
    assert reason in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_a_recipe_can_be_a_yaml_file(tmp_path):
    recipe = tmp_path / "sharp.yaml"
    recipe.write_text(
        "optimizer: sgd\nlr: 0.1\nmomentum: 0.9\nweight_decay: 0\nepochs: 3\n"
        "batch_size: 32\nschedule: {kind: multistep, milestones: [2]}\n"
    )
    config = resolve(load_config(None, {"recipe_b": str(recipe)}))
    assert config.recipe_b.name == "sharp" and config.recipe_b.schedule.milestones == [2]
    assert config.recipe_a.name == "lenet5-digits"
    recipe.write_text("lr: -1\n")
    with pytest.raises(ConfigError, match="^lr: Input should be greater than 0$"):
        resolve(load_config(None, {"recipe_b": str(recipe)}))


def test_fdf_overrides_reshape_a_derived_schedule():
    config = resolve(
        ExperimentConfig(
            arch="regnet_x_200mf",
            data_dir=".",
            fdf={"iterations_per_phase": 3, "final_iterations": 7},
        )
    )
    assert [p.iterations for p in config.phases][-2:] == [3, 7]
    assert config.phases[-1].name.endswith("all layers")


def test_a_dataset_read_from_disk_needs_an_existing_directory(tmp_path):
    db = f"sqlite:///{tmp_path}/x.db"
    missing = CliRunner().invoke(app, ["submit", "--arch", "resnet18", "--db", db])
    assert missing.exit_code == 2
    assert "data_dir: dataset 'cifar10' is read from disk" in missing.output
    wrong = CliRunner().invoke(
        app, ["submit", "--arch", "resnet18", "--data-dir", str(tmp_path / "nope"), "--db", db]
    )
    assert wrong.exit_code == 2 and "is not a directory" in wrong.output
    assert not (tmp_path / "x.db").exists() or "experiments" not in wrong.output


def test_a_recipe_mapping_overrides_only_the_fields_it_names():
    config = resolve(
        load_config(None, {"arch": "resnet18", "data_dir": ".", "recipe_a": {"epochs": 2}})
    )
    assert config.recipe_a.epochs == 2
    assert config.recipe_a.weight_decay == 5e-4 and config.recipe_a.schedule.kind == "onecycle"
    assert config.recipe_a.name == "resnet18-cifar10 (modified)"


def test_section_errors_name_their_section():
    with pytest.raises(ConfigError, match=r"^m2m\.lrr: Extra inputs are not permitted$"):
        resolve(load_config(None, {"m2m": {"lrr": 0.1}}))
    with pytest.raises(ConfigError, match=r"^m2o\.lr: Input should be greater than 0$"):
        resolve(load_config(None, {"m2o": {"lr": -1}}))
