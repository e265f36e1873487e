"""DLMS model profiles as data: the file format, its validation, the catalogue's choice of a
meter's profile, event tables, client addresses and invocation-counter objects."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from adapters.dlms.profile_files import (
    ProfileFileError,
    load_catalogue,
    load_profile,
    load_profiles,
)
from adapters.dlms.push_layout import PushLayout
from bootstrap.dlms_profiles import profile_catalogue
from config.settings import Settings, SettingsError
from domain.dlms_profile import Clients, InvocationCounter, ModelProfile, ProfileCatalogue
from domain.errors import ValidationFailed
from domain.meter_events import MeterEventKind
from domain.values import SecurityLevel

FLEET = ("1.0.1.8.0.255:0:30", "1.0.2.8.0.255:0:30")
MINIMAL = 'format = 1\nname = "mine"\nversion = "7"\n'


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_the_built_in_profiles_load_and_idis_is_the_default() -> None:
    catalogue = load_catalogue(None, "idis", FLEET)
    assert catalogue.names == ["dsmr", "idis", "vendor-example"]
    idis = catalogue.default
    assert idis.name == "idis"
    assert [idis.clients.for_level(level) for level in SecurityLevel] == [16, 17, 1]
    assert idis.invocation_counter.obis_for(1) == "0.0.43.1.0.255"
    assert catalogue.event_table(idis)[62] is MeterEventKind.RELAY_DISCONNECTED
    # models that name no push layout use the fleet's (HES_DLMS_PUSH_LAYOUT)
    assert [p.values for p in catalogue.push_layouts(idis)] == [FLEET]


def test_dsmr_and_vendor_tables_differ_from_idis() -> None:
    catalogue = load_catalogue(None, "idis", FLEET)
    idis, dsmr, vendor = (catalogue.get(n) for n in ("idis", "dsmr", "vendor-example"))
    assert catalogue.event_table(idis)[47] is MeterEventKind.TAMPER
    assert 47 not in catalogue.event_table(dsmr)  # configuration change: OTHER
    assert catalogue.event_table(dsmr)[42] is MeterEventKind.TAMPER
    assert catalogue.event_table(vendor)[33] is MeterEventKind.RELAY_DISCONNECTED
    assert 62 not in catalogue.event_table(vendor)  # overcurrent there
    assert vendor.invocation_counter.obis_for(1) is None  # no counter object: persisted only
    assert vendor.clock.method == "shift"
    layouts = [PushLayout.of(spec) for spec in vendor.push]
    assert [(len(layout), layout.setup) for layout in layouts] == [
        (2, bytes((0, 0, 25, 9, 0, 255))),
        (3, None),
    ]


def test_a_meter_uses_its_assigned_profile_else_a_matching_one_else_the_default() -> None:
    catalogue = load_catalogue(None, "idis", FLEET)
    assert catalogue.resolve("dsmr", "Example Vendor", "X", "1").name == "dsmr"
    assert catalogue.resolve(None, "example vendor", "X", "1").name == "vendor-example"
    assert catalogue.resolve(None, "Kaifa", "MA309", "1").name == "idis"
    # a profile that was assigned and has since been removed: the automatic choice
    assert catalogue.resolve("gone", "Kaifa", "MA309", "1").name == "idis"


def test_a_match_needs_every_named_field() -> None:
    text = MINIMAL + '[match]\nmanufacturers = ["ACME"]\nmodels = ["M1"]\nfirmware = ["2."]\n'
    profile = msgspec.toml.decode(text.encode(), type=ModelProfile)
    assert profile.match.fits("acme", "m1", "2.4.1")
    assert not profile.match.fits("acme", "m1", "3.0")
    assert not profile.match.fits("acme", "m2", "2.4")
    assert not ModelProfile(format=1, name="x", version="1").match.fits("a", "b", "c")


def test_client_addresses_follow_the_security_level_unless_the_profile_says_otherwise() -> None:
    assert Clients().for_level(SecurityLevel.NONE) == 16
    assert Clients().for_level(SecurityLevel.LLS) == 17
    assert Clients().for_level(SecurityLevel.HLS_GMAC) == 1
    assert Clients(hls=48).for_level(SecurityLevel.HLS_GMAC) == 48


def test_counter_objects_may_be_per_client_or_absent() -> None:
    per_client = InvocationCounter(object="0.0.43.1.{client}.255")
    assert per_client.obis_for(1) == "0.0.43.1.1.255"
    assert per_client.obis_for(48) == "0.0.43.1.48.255"
    assert InvocationCounter(source="persisted").obis_for(1) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('format = 2\nname = "x"\nversion = "1"\n', "format: format 2 is not 1"),
        ('format = 1\nname = "Bad Name"\nversion = "1"\n', "name: name must be"),
        (MINIMAL + "[clients]\nlls = 200\n", "clients.lls: client address 200"),
        (MINIMAL + '[invocation_counter]\nobject = "0.0.43"\n', "invocation_counter.object"),
        (MINIMAL + "[invocation_counter]\nresync_step = 0\n", "resync_step"),
        (MINIMAL + "[link]\nmax_pdu = 10\n", "link.max_pdu"),
        (MINIMAL + '[events]\nlogs = ["x"]\n', "events.logs[0]"),
        (MINIMAL + "[events.kinds]\nTAMPER = [40]\nPOWER_UP = [40]\n", "code 40 is also"),
        (MINIMAL + "[events.kinds]\nBROKEN = [1]\n", "Invalid enum value 'BROKEN'"),
        (MINIMAL + "colour = 1\n", "unknown field `colour`"),
        (MINIMAL + '[clock]\nmethod = "guess"\n', "Invalid enum value 'guess'"),
        (
            MINIMAL + '[[push]]\nname = "a"\nvalues = ["1.0.32.7.0.255:0:30"]\n',
            "push[0].values[0]: 1.0.32.7.0.255 is given in unit code 30",
        ),
        (
            MINIMAL
            + '[[push]]\nname = "a"\nvalues = ["1.0.1.8.0.255:0:30"]\n'
            + '[[push]]\nname = "b"\nvalues = ["1.0.2.8.0.255:0:30"]\n',
            "cannot be told from 'a'",
        ),
        ("format = 1\nname = \n", "not valid TOML"),
    ],
)
def test_a_bad_profile_file_names_the_file_the_field_and_the_rule(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(ProfileFileError) as raised:
        load_profile(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_json_profiles_and_an_operators_directory_replace_built_in_ones(tmp_path: Path) -> None:
    write(
        tmp_path,
        "idis.json",
        '{"format": 1, "name": "idis", "version": "local-2", "clients": {"hls": 48}}',
    )
    write(tmp_path, "mine.toml", MINIMAL)
    write(tmp_path, "notes.txt", "ignored")
    profiles = {p.name: p for p in load_profiles(tmp_path)}
    assert set(profiles) == {"dsmr", "idis", "mine", "vendor-example"}
    assert (profiles["idis"].version, profiles["idis"].clients.hls) == ("local-2", 48)


def test_two_files_of_one_name_in_a_directory_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", MINIMAL)
    write(tmp_path, "b.toml", MINIMAL)
    with pytest.raises(ProfileFileError, match="'mine' is also defined in"):
        load_profiles(tmp_path)


def test_settings_name_the_default_and_the_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="HES_DLMS_DEFAULT_PROFILE"):
        Settings.of(dlms_default_profile="Not A Name")
    with pytest.raises(SettingsError, match="'nope' is not among the loaded profiles"):
        profile_catalogue(Settings.of(dlms_default_profile="nope").dlms)
    with pytest.raises(SettingsError, match="not a directory"):
        profile_catalogue(Settings.of(dlms_profile_dir=tmp_path / "missing").dlms)
    write(tmp_path, "mine.toml", MINIMAL)
    catalogue = profile_catalogue(
        Settings.of(dlms_profile_dir=tmp_path, dlms_default_profile="mine").dlms
    )
    assert catalogue.default.name == "mine"
    assert "mine" in catalogue


def test_profiles_check_themselves_and_catalogues_refuse_twins() -> None:
    with pytest.raises(ValidationFailed, match="name"):
        ModelProfile(format=1, name="UPPER", version="1").check()
    one = ModelProfile(format=1, name="one", version="1")
    with pytest.raises(ValueError, match="two profiles are named 'one'"):
        ProfileCatalogue([one, one], "one", FLEET)


def test_the_documented_example_profile_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "dlms-profiles.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    profile = load_profile(write(tmp_path, "example.toml", example))
    assert profile.name == "acme-am550"
    assert profile.match.fits("acme", "am550", "2.1")
    assert [layout.name for layout in profile.push] == ["energy", "instantaneous"]


def test_a_push_starting_with_its_push_setup_is_read_with_the_models_layout() -> None:
    from adapters.dlms.push_listener import _layout_of, _notification
    from adapters.dlms.simulator import behaviour
    from adapters.dlms.simulator.meter import SimulatedMeter
    from adapters.dlms.simulator.push import notification

    catalogue = load_catalogue(None, "idis", FLEET)
    vendor = tuple(PushLayout.of(spec) for spec in catalogue.get("vendor-example").push)
    fleet = (PushLayout.parse(",".join(FLEET)),)
    start = time.time() - 86_400
    meter = SimulatedMeter(3, history_start=start, behaviour=behaviour("push-setup-first"))
    body = _notification(notification(meter, 1, ciphered=False))
    assert body.setup == bytes((0, 0, 25, 9, 0, 255)) and body.name == "HESSIM0000003"
    layout = _layout_of(body, vendor)
    assert layout is not None and layout.name == "energy"
    values = meter.values()
    pushed = [values["1.0.1.8.0.255"], values["1.0.2.8.0.255"]]
    assert all(
        isinstance(a, int) and abs(a - b) < 100 for a, b in zip(body.values, pushed, strict=True)
    )
    assert _layout_of(body, fleet) is None  # the fleet's layout does not read it
    plain = _notification(notification(SimulatedMeter(4, history_start=start), 1, ciphered=False))
    assert plain.setup is None and _layout_of(plain, vendor) is None
