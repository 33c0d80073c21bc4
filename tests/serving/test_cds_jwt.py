"""CDS Hooks client authentication (CDS Hooks 2.0 "Trusting CDS Clients"): a JWT signed ES384 or RS384 by an
allow-listed EHR, verified against its JWK Set; keys are generated here (EC P-384 and RSA 2048)."""

from __future__ import annotations

import base64
import http.server
import json
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from models.errors import ConfigError
from serving.fhir.cds_jwks import FileJwks, UrlJwks, parse_jwks
from serving.fhir.cds_jwt import CdsTokenError, CdsTokenVerifier, MemoryReplayGuard, build_verifier
from serving.settings import ServingSettings
from tests.net import http_server
from tests.serving.test_api_cds import _request

PUBLIC_URL = "https://vigil.example.org"
AUD = f"{PUBLIC_URL}/cds-services/vigil-triage"
ISS = "https://ehr.example.org/"
PATH = "/cds-services/vigil-triage"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int, size: int | None = None) -> str:
    return _b64(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


class Signer:
    """A CDS client's key pair: signs JWTs and publishes its public JWK."""

    def __init__(self, kind: str, kid: str, bits: int = 2048) -> None:
        self.kind, self.kid = kind, kid
        self.alg = "ES384" if kind == "EC" else "RS384"
        self.private = (
            ec.generate_private_key(ec.SECP384R1())
            if kind == "EC"
            else rsa.generate_private_key(public_exponent=65537, key_size=bits)
        )

    def jwk(self) -> dict:
        numbers = self.private.public_key().public_numbers()
        if self.kind == "EC":
            return {
                "kty": "EC",
                "crv": "P-384",
                "use": "sig",
                "alg": "ES384",
                "kid": self.kid,
                "x": _int_b64(numbers.x, 48),
                "y": _int_b64(numbers.y, 48),
            }
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS384",
            "kid": self.kid,
            "n": _int_b64(numbers.n),
            "e": _int_b64(numbers.e),
        }

    def sign(self, claims: dict, **header: object) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **header}
        head = {k: v for k, v in head.items() if v is not None}
        signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}".encode()
        if self.kind == "EC":
            r, s = decode_dss_signature(self.private.sign(signing_input, ec.ECDSA(hashes.SHA384())))
            signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        else:
            signature = self.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA384())
        return f"{signing_input.decode()}.{_b64(signature)}"


def claims(**changes: object) -> dict:
    now = int(time.time())
    out = {"iss": ISS, "aud": AUD, "exp": now + 120, "iat": now, "jti": str(uuid.uuid4()), **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("EC", "ehr-ec-1")


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return Signer("RSA", "ehr-rsa-1")


def write_issuers(
    folder: Path, *signers: Signer, scopes: tuple[str, ...] = ("triage",), extra: list | None = None
) -> Path:
    (folder / "ehr-jwks.json").write_text(json.dumps({"keys": [s.jwk() for s in signers]}))
    path = folder / "cds-issuers.json"
    entries = [{"iss": ISS, "name": "main-ehr", "scopes": list(scopes), "jwks_file": "ehr-jwks.json"}, *(extra or [])]
    path.write_text(json.dumps({"issuers": entries}))
    return path


@pytest.fixture
def jwt_service(tmp_path, model_folder, service_factory, ec_key, rsa_key):
    issuers = write_issuers(tmp_path, ec_key, rsa_key)
    with service_factory(
        tmp_path, model_folder, cds_auth="jwt", cds_jwt_issuers=issuers, cds_public_url=PUBLIC_URL + "/"
    ) as svc:
        yield svc


def call(svc, token: str | None, **headers: str):
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return svc.client.post(PATH, json=_request(), headers=headers)


# ------------------------------------------------------------------------------------------------- accepted
@pytest.mark.parametrize("which", ["ec_key", "rsa_key"])
def test_a_valid_token_is_answered_and_audited_as_its_issuer(jwt_service, request, which):
    signer = request.getfixturevalue(which)
    res = call(jwt_service, signer.sign(claims(aud=[AUD, "https://other.example/x"], tenant="t1")))
    assert res.status_code == 200, res.text
    assert res.json()["cards"][0]["indicator"] == "critical"
    assert jwt_service.store.read_audit(limit=10)[-1].client == "cds:main-ehr"


# ------------------------------------------------------------------------------------------------- refused
def _refusals(ec_key: Signer, rsa_key: Signer) -> dict[str, tuple[str | None, str]]:
    now = int(time.time())
    stranger = Signer("EC", ec_key.kid)  # same kid, another private key
    garbage = _b64(b'{"alg":"ES384","kid":"ehr-ec-1"}') + "." + _b64(b"[" * 4000) + "." + _b64(b"x" * 96)
    return {
        "no token": (None, "needs a CDS Hooks JWT"),
        "wrong audience": (ec_key.sign(claims(aud=f"{PUBLIC_URL}/cds-services")), "audience ('aud')"),
        "audience of another host": (
            ec_key.sign(claims(aud="https://evil.example/cds-services/vigil-triage")),
            "audience ('aud')",
        ),
        "expired": (ec_key.sign(claims(exp=now - 120, iat=now - 200)), "expired"),
        "issued in the future": (ec_key.sign(claims(iat=now + 600, exp=now + 700)), "not valid yet"),
        "not before in the future": (ec_key.sign(claims(nbf=now + 600)), "not valid yet"),
        "too long-lived": (ec_key.sign(claims(exp=now + 86_400)), "more than 300 s away"),
        "missing kid": (ec_key.sign(claims(), kid=None), "no 'kid'"),
        "unknown kid": (ec_key.sign(claims(), kid="rotated-away"), "names no key"),
        "bad signature": (stranger.sign(claims()), "signature does not verify"),
        "tampered claims": (
            ec_key.sign(claims()).split(".")[0]
            + "."
            + _b64(json.dumps(claims(iss=ISS)).encode())
            + "."
            + ec_key.sign(claims()).split(".")[2],
            "signature does not verify",
        ),
        "unlisted issuer": (ec_key.sign(claims(iss="https://rogue.example/")), "not on this service's allow-list"),
        "alg none": (
            ec_key.sign(claims())
            .rsplit(".", 1)[0]
            .replace(
                _b64(json.dumps({"alg": "ES384", "typ": "JWT", "kid": ec_key.kid}).encode()),
                _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": ec_key.kid}).encode()),
            )
            + ".AA",
            "'alg' must be",
        ),
        "alg HS384": (ec_key.sign(claims(), alg="HS384"), "'alg' must be"),
        "alg of the other key type": (ec_key.sign(claims(), alg="RS384"), "names a ES384 key"),
        "missing jti": (ec_key.sign(claims(jti=None)), "'jti'"),
        "missing exp": (rsa_key.sign(claims(exp=None)), "'exp' claim"),
        "not a JWT": ("a.b", "needs a CDS Hooks JWT"),
        "nested JSON payload": (garbage, "not base64url JSON"),
        "duplicate claims": (".".join([_b64(b"{}"), _b64(b'{"iss":1,"iss":2}'), _b64(b"x")]), "not base64url JSON"),
        "oversized token": ("a." + "b" * 9000 + ".c", "longer than 8192"),
    }


REFUSALS = list(_refusals(Signer("EC", "k"), Signer("EC", "k")))  # the names, for the parametrisation


@pytest.mark.parametrize("case", REFUSALS)
def test_each_bad_token_is_refused_with_401_naming_the_problem(jwt_service, ec_key, rsa_key, case):
    token, expected = _refusals(ec_key, rsa_key)[case]
    res = call(jwt_service, token)
    assert res.status_code == 401, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    assert res.headers["www-authenticate"].startswith('Bearer realm="vigil-cds"')
    detail = res.json()["detail"]
    assert expected in detail, detail
    if token is not None:  # the token is never echoed, nor its signature
        assert token not in res.text
        assert len(token.split(".")[-1]) < 20 or token.split(".")[-1] not in res.text
    assert jwt_service.store.read_audit(limit=10) == []


def test_a_replayed_token_is_refused(jwt_service, ec_key):
    token = ec_key.sign(claims())
    assert call(jwt_service, token).status_code == 200
    again = call(jwt_service, token)
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    assert len(jwt_service.store.read_audit(limit=10)) == 1
    assert call(jwt_service, ec_key.sign(claims())).status_code == 200  # a fresh jti is fine


def test_an_issuer_without_the_triage_scope_gets_403(tmp_path, model_folder, service_factory, ec_key):
    issuers = write_issuers(tmp_path, ec_key, scopes=("imaging",))
    with service_factory(
        tmp_path, model_folder, cds_auth="jwt", cds_jwt_issuers=issuers, cds_public_url=PUBLIC_URL
    ) as svc:
        res = call(svc, ec_key.sign(claims()))
    assert res.status_code == 403 and "'triage' scope" in res.json()["detail"]


# ------------------------------------------------------------------------------------------------- API keys
def test_api_keys_are_refused_on_cds_under_jwt_but_keep_working_elsewhere(jwt_service):
    res = jwt_service.client.post(PATH, json=_request(), headers=jwt_service.headers("triage"))
    assert res.status_code == 401 and "API keys are not accepted here" in res.json()["detail"]
    res = jwt_service.client.post(PATH, json=_request(), headers={"X-API-Key": jwt_service.keys["triage"]})
    assert res.status_code == 401
    record = {"age_years": 70, "sex": "female", "heart_rate": 100}
    res = jwt_service.client.post("/v1/triage", json=record, headers=jwt_service.headers("triage"))
    assert res.status_code != 401, res.text
    assert jwt_service.client.get("/cds-services").status_code == 200  # discovery stays public


def test_by_default_cds_takes_api_keys_and_ignores_no_jwt_setting(service, ec_key):
    assert service.client.post(PATH, json=_request(), headers=service.headers("triage")).status_code == 200
    res = call(service, ec_key.sign(claims()))  # no allow-list: a JWT is just an invalid API key
    assert res.status_code == 401 and "API key" in res.json()["detail"]


def test_jwt_or_api_key_admits_both(tmp_path, model_folder, service_factory, ec_key):
    issuers = write_issuers(tmp_path, ec_key)
    with service_factory(
        tmp_path, model_folder, cds_auth="jwt_or_api_key", cds_jwt_issuers=issuers, cds_public_url=PUBLIC_URL
    ) as svc:
        assert call(svc, ec_key.sign(claims())).status_code == 200
        assert svc.client.post(PATH, json=_request(), headers=svc.headers("triage")).status_code == 200
        assert svc.client.post(PATH, json=_request(), headers=svc.headers("imaging")).status_code == 403
        assert call(svc, ec_key.sign(claims(aud="https://x.example/"))).status_code == 401
        both = call(svc, ec_key.sign(claims()), **{"X-API-Key": svc.keys["triage"]})
        assert both.status_code == 401 and "not both" in both.json()["detail"]


def test_the_openapi_document_describes_the_jwt_bearer_scheme():
    from serving.api.app import openapi_document

    doc = openapi_document()
    scheme = doc["components"]["securitySchemes"]["CdsHooksJWT"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    security = doc["paths"]["/cds-services/{service_id}"]["post"]["security"]
    assert {"CdsHooksJWT": []} in security and {"HTTPBearer": []} in security
    assert "CdsHooksJWT" not in json.dumps(doc["paths"]["/v1/triage"])


# ------------------------------------------------------------------------------------------------- settings
def test_settings_that_would_leave_jwt_half_on_are_refused(tmp_path, ec_key):
    issuers = write_issuers(tmp_path, ec_key)
    with pytest.raises(ConfigError, match="VIGIL_CDS_JWT_ISSUERS: required when VIGIL_CDS_AUTH=jwt"):
        build_verifier(ServingSettings(cds_auth="jwt", cds_public_url=PUBLIC_URL))
    with pytest.raises(ConfigError, match="VIGIL_CDS_PUBLIC_URL: required"):
        build_verifier(ServingSettings(cds_auth="jwt", cds_jwt_issuers=issuers))
    with pytest.raises(ConfigError, match="VIGIL_CDS_AUTH=api_key ignores it"):
        build_verifier(ServingSettings(cds_jwt_issuers=issuers))
    with pytest.raises(ConfigError, match="VIGIL_CDS_PUBLIC_URL: must be"):
        build_verifier(ServingSettings(cds_auth="jwt", cds_jwt_issuers=issuers, cds_public_url="vigil.example.org"))


def test_a_bad_allow_list_stops_start_up(tmp_path, model_folder, service_factory, ec_key):
    issuers = write_issuers(
        tmp_path, ec_key, extra=[{"iss": ISS, "name": "dup", "scopes": ["triage"], "jwks_file": "ehr-jwks.json"}]
    )
    with pytest.raises(ConfigError, match="each issuer's 'iss' must be unique"):
        with service_factory(
            tmp_path, model_folder, cds_auth="jwt", cds_jwt_issuers=issuers, cds_public_url=PUBLIC_URL
        ):
            pass


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d": "AAAA"}, "private key material"),
        ({"kid": None}, "'kid' must be"),
        ({"x": "AAAA"}, "'x' must be base64url of 48 bytes"),
    ],
)
def test_a_bad_jwk_set_is_a_config_error(ec_key, change, message):
    jwk = {k: v for k, v in {**ec_key.jwk(), **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        parse_jwks({"keys": [jwk]}, "test")


def test_weak_rsa_keys_are_refused_and_other_key_types_skipped(ec_key):
    weak = Signer("RSA", "weak", bits=1024)
    with pytest.raises(ConfigError, match="at least 2048 bits"):
        parse_jwks({"keys": [weak.jwk()]}, "test")
    p256 = {"kty": "EC", "crv": "P-256", "kid": "p256", "x": "AA", "y": "AA"}
    assert list(parse_jwks({"keys": [p256, ec_key.jwk()]}, "test")) == [ec_key.kid]
    with pytest.raises(ConfigError, match="no ES384"):
        parse_jwks({"keys": [p256]}, "test")
    with pytest.raises(ConfigError, match="used twice"):
        parse_jwks({"keys": [ec_key.jwk(), ec_key.jwk()]}, "test")


def test_a_replaced_jwks_file_is_read_again_for_a_new_kid(tmp_path, ec_key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_key.jwk()]}))
    source = FileJwks(path)
    rotated = Signer("EC", "ehr-ec-2")
    assert source.get(rotated.kid) is None
    path.write_text(json.dumps({"keys": [ec_key.jwk(), rotated.jwk()]}))
    import os

    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert source.get(rotated.kid) is not None


# ------------------------------------------------------------------------------------------------- replay record
def test_the_memory_replay_record_forgets_at_expiry_and_refuses_when_full():
    guard = MemoryReplayGuard(max_entries=2)
    assert guard.first_use("a", "j1", expires_at=100, now=0)
    assert not guard.first_use("a", "j1", expires_at=100, now=50)
    assert guard.first_use("b", "j1", expires_at=100, now=50)  # jti values are per issuer
    with pytest.raises(CdsTokenError, match="too many") as info:
        guard.first_use("a", "j2", expires_at=100, now=60)
    assert info.value.status == 503
    assert guard.first_use("a", "j1", expires_at=300, now=101) and len(guard) == 1


def test_the_redis_replay_record_is_shared(tmp_path, ec_key):
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {type(exc).__name__}")
    issuers = write_issuers(tmp_path, ec_key)
    settings = ServingSettings(
        cds_auth="jwt", cds_jwt_issuers=issuers, cds_public_url=PUBLIC_URL, cds_jwt_replay_url=url
    )
    first, second = build_verifier(settings), build_verifier(settings)  # two workers
    assert first is not None and second is not None
    token = ec_key.sign(claims())
    assert first.verify(token, path=PATH).name == "main-ehr"
    with pytest.raises(CdsTokenError, match="already used"):
        second.verify(token, path=PATH)


# ------------------------------------------------------------------------------------------------- JWK Set URL
class _JwksHandler(http.server.BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def jwks_server():
    handler = type("Handler", (_JwksHandler,), {"hits": 0})
    with http_server(handler) as port:
        yield f"http://127.0.0.1:{port}/jwks.json", handler


def test_a_jwks_url_is_fetched_cached_and_refetched_for_a_new_kid_at_most_once_a_minute(jwks_server, ec_key):
    url, handler = jwks_server
    handler.body = json.dumps({"keys": [ec_key.jwk()]}).encode()
    clock = [1000.0]
    source = UrlJwks(url, timeout_s=2, cache_s=3600, clock=lambda: clock[0])
    assert source.get(ec_key.kid) is not None and source.get(ec_key.kid) is not None
    assert handler.hits == 1
    assert source.get("unknown") is None and source.get("unknown") is None
    assert handler.hits == 1  # fetched less than a minute ago: unknown kids do not hammer the issuer
    clock[0] += 61
    assert source.get("unknown") is None and handler.hits == 2
    handler.body = b"x" * (300 * 1024)
    clock[0] += 3600
    assert source.get(ec_key.kid) is not None and handler.hits == 3  # too large: the last good set is kept


def test_an_unreachable_jwks_url_is_503_not_a_crash(tmp_path, ec_key):
    from tests.net import free_port

    (tmp_path / "issuers.json").write_text(
        json.dumps(
            {
                "issuers": [
                    {
                        "iss": ISS,
                        "name": "main-ehr",
                        "scopes": ["triage"],
                        "jwks_url": f"http://127.0.0.1:{free_port()}/j",
                    }
                ]
            }
        )
    )
    verifier = build_verifier(
        ServingSettings(
            cds_auth="jwt", cds_jwt_issuers=tmp_path / "issuers.json", cds_public_url=PUBLIC_URL, cds_jwks_timeout_s=1
        )
    )
    assert isinstance(verifier, CdsTokenVerifier)
    with pytest.raises(CdsTokenError, match="cannot be fetched") as info:
        verifier.verify(ec_key.sign(claims()), path=PATH)
    assert info.value.status == 503


def test_a_jwks_url_must_be_https(tmp_path):
    (tmp_path / "issuers.json").write_text(
        json.dumps(
            {
                "issuers": [
                    {"iss": ISS, "name": "main-ehr", "scopes": ["triage"], "jwks_url": "http://ehr.example.org/jwks"}
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match=r"issuers\.0\.jwks_url.*https://"):
        build_verifier(
            ServingSettings(cds_auth="jwt", cds_jwt_issuers=tmp_path / "issuers.json", cds_public_url=PUBLIC_URL)
        )
