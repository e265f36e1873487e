"""One application association of a simulated meter: AARQ/AARE, HLS-GMAC, ciphering, services.

Client SAP 16 is public (no authentication), 17 reads with LLS, 1 manages with HLS-GMAC
(mechanism 5) in a ciphered context: every xDLMS APDU is suite-0 authenticated and
encrypted, answered in the form the request used (general-glo or service-specific glo).
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
from dataclasses import dataclass

from adapters.dlms import axdr
from adapters.dlms.axdr import Tag
from adapters.dlms.cipher import (
    SC_AUTHENTICATED_ENCRYPTED,
    CipherError,
    Deciphered,
    cipher_apdu,
    decipher_apdu,
    hls_response,
    is_ciphered,
    verify_hls_response,
)
from adapters.dlms.simulator import acse
from adapters.dlms.simulator import apdu as x
from adapters.dlms.simulator import obis as O
from adapters.dlms.simulator.acse import AcseError, AppContext, Diagnostic, Mechanism, Result
from adapters.dlms.simulator.apdu import (
    ApduError,
    Conformance,
    DataAccessResult,
    GetResult,
    InitiateError,
    ServiceError,
    StateError,
    UnsupportedService,
)
from adapters.dlms.simulator.cosem_objects import AssociationInfo, Role
from adapters.dlms.simulator.meter import SimulatedMeter

log = logging.getLogger(__name__)

SERVER_MAX_PDU = 1024
MIN_CLIENT_PDU = 64
SUPPORTED_CONFORMANCE = (
    Conformance.GENERAL_PROTECTION
    | Conformance.PRIORITY_MGMT
    | Conformance.BLOCK_TRANSFER_GET
    | Conformance.BLOCK_TRANSFER_SET
    | Conformance.BLOCK_TRANSFER_ACTION
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.DATA_NOTIFICATION
    | Conformance.GET
    | Conformance.SET
    | Conformance.SELECTIVE_ACCESS
    | Conformance.ACTION
)
_GENERAL_OVERHEAD = 1 + 1 + 8 + 3 + 5 + 12
_GLO_OVERHEAD = 1 + 3 + 5 + 12
_BLOCK_HEADER = 1 + 1 + 1 + 1 + 4 + 1 + 3
MAX_BLOCKED_VALUE = 64 * 1024
"""Largest SET value or ACTION parameter accepted in blocks."""


@dataclass(slots=True)
class _Incoming:
    """A SET value or ACTION parameter arriving in blocks."""

    service: int
    invoke: int
    target: x.Reference
    number: int
    raw: bytearray


class Phase(enum.Enum):
    """Where the association stands."""

    IDLE = "idle"
    PENDING_HLS = "pending HLS pass 3/4"
    ASSOCIATED = "associated"


@dataclass(frozen=True, slots=True)
class Policy:
    """What a client SAP must present and what it may do."""

    role: Role
    mechanism: Mechanism
    context: AppContext


POLICIES: dict[int, Policy] = {
    16: Policy(Role.PUBLIC, Mechanism.NONE, AppContext.LN),
    17: Policy(Role.READER, Mechanism.LLS, AppContext.LN),
    1: Policy(Role.MANAGER, Mechanism.HLS_GMAC, AppContext.LN_CIPHERED),
}


class _Reject(Exception):
    def __init__(self, diagnostic: Diagnostic, reason: str, user_info: bytes | None = None):
        super().__init__(reason)
        self.diagnostic = diagnostic
        self.user_info = user_info


class Association:
    """Protocol state of one client on one connection; ``handle`` maps a request to a reply."""

    def __init__(self, meter: SimulatedMeter, client_sap: int, peer: str) -> None:
        self.meter = meter
        self.client_sap = client_sap
        self.peer = peer
        self.phase = Phase.IDLE
        self.policy = POLICIES.get(client_sap)
        self.client_title: bytes | None = None
        self.ctos = b""
        self.stoc = b""
        self.server_max_pdu = min(SERVER_MAX_PDU, meter.behaviour.max_pdu)
        self.max_send = self.server_max_pdu
        self._general = False
        self._blocks: tuple[int, int, bytes] | None = None  # invoke, last block number, rest
        self._incoming: _Incoming | None = None

    @property
    def ciphered(self) -> bool:
        """Whether xDLMS APDUs of this association are ciphered."""
        return self.policy is not None and self.policy.context is AppContext.LN_CIPHERED

    def _warn(self, message: str, *args: object) -> None:
        log.warning(
            "meter %s, %s, SAP %d: " + message, self.meter.serial, self.peer, self.client_sap, *args
        )

    # -- entry point ----------------------------------------------------------------------
    def handle(self, request: bytes) -> bytes:
        """The response APDU to one request APDU."""
        tag = request[0]
        if tag == acse.AARQ:
            return self._aarq(request)
        if tag == acse.RLRQ:
            return self._rlrq(request)
        if self.phase is Phase.IDLE:
            return x.exception_response(
                StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
            )
        if not self.ciphered:
            if is_ciphered(request):
                self._warn("ciphered APDU in an unciphered association")
                return x.exception_response(
                    StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
                )
            return self._service(request, overhead=0)
        if not is_ciphered(request):
            self._warn("plain APDU 0x%02X in a ciphered association", tag)
            return x.exception_response(
                StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
            )
        unwrapped = self._decipher(request)
        if isinstance(unwrapped, bytes):
            return unwrapped
        self._general = unwrapped.general
        overhead = _GENERAL_OVERHEAD if unwrapped.general else _GLO_OVERHEAD
        return self._cipher(self._service(unwrapped.apdu, overhead=overhead))

    # -- ciphering ------------------------------------------------------------------------
    def _decipher(self, request: bytes) -> Deciphered | bytes:
        """The deciphered request, or the exception-response to send instead."""
        try:
            out = decipher_apdu(
                request, keys=self.meter.keys.keys, peer_system_title=self.client_title
            )
            if out.system_title != self.client_title:
                raise CipherError("system title differs from the one given in the AARQ")
            if out.security_control != SC_AUTHENTICATED_ENCRYPTED:
                raise CipherError(f"security control 0x{out.security_control:02X} is not 0x30")
        except CipherError as exc:
            self._warn("deciphering failed: %s", exc)
            return x.exception_response(
                StateError.SERVICE_NOT_ALLOWED, ServiceError.DECIPHERING_ERROR
            )
        if not self.meter.state.accept_client_ic(out.invocation_counter):
            self._warn(
                "replayed invocation counter %d (last accepted %d)",
                out.invocation_counter,
                self.meter.state.client_ic_last,
            )
            return x.exception_response(
                StateError.SERVICE_NOT_ALLOWED,
                ServiceError.INVOCATION_COUNTER_ERROR,
                self.meter.state.client_ic_last + 1,
            )
        return out

    def _cipher(self, response: bytes, general: bool | None = None) -> bytes:
        if response[0] == x.EXCEPTION_RESPONSE:
            return response
        return cipher_apdu(
            response,
            security_control=SC_AUTHENTICATED_ENCRYPTED,
            system_title=self.meter.system_title,
            invocation_counter=self.meter.state.next_server_ic(),
            keys=self.meter.keys.keys,
            general=self._general if general is None else general,
        )

    # -- ACSE -----------------------------------------------------------------------------
    def _aarq(self, request: bytes) -> bytes:
        self.phase, self._blocks, self.client_title = Phase.IDLE, None, None
        self._incoming = None
        context = AppContext.LN
        try:
            aarq = acse.parse_aarq(request)
            if aarq.context in (AppContext.LN, AppContext.LN_CIPHERED):
                context = AppContext(aarq.context)
            return self._accept(aarq)
        except AcseError as exc:
            self._warn("malformed AARQ: %s", exc)
            diagnostic, user_info = Diagnostic.NO_REASON_GIVEN, None
        except _Reject as rej:
            self._warn("association rejected: %s", rej)
            diagnostic, user_info = rej.diagnostic, rej.user_info
        return acse.aare(
            context=context,
            result=Result.REJECTED_PERMANENT,
            diagnostic=diagnostic,
            user_information=user_info,
        )

    def _accept(self, aarq: acse.Aarq) -> bytes:
        policy = self.policy
        if policy is None:
            raise _Reject(
                Diagnostic.NO_REASON_GIVEN, f"no association for client SAP {self.client_sap}"
            )
        if aarq.context != policy.context:
            raise _Reject(
                Diagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
                f"application context {aarq.context}, SAP {self.client_sap} needs {policy.context}",
            )
        if aarq.mechanism != policy.mechanism:
            diagnostic = (
                Diagnostic.MECHANISM_NAME_REQUIRED
                if aarq.mechanism == Mechanism.NONE
                else Diagnostic.MECHANISM_NAME_NOT_RECOGNISED
            )
            raise _Reject(diagnostic, f"mechanism {aarq.mechanism}, needs {policy.mechanism.name}")
        if policy.mechanism is Mechanism.LLS:
            password = self.meter.keys.lls_password
            if not hmac.compare_digest(aarq.authentication_value or b"", password):
                raise _Reject(Diagnostic.AUTHENTICATION_FAILURE, "wrong LLS password")
        if policy.mechanism is Mechanism.HLS_GMAC:
            if aarq.calling_title is None or len(aarq.calling_title) != 8:
                raise _Reject(Diagnostic.NO_REASON_GIVEN, "HLS needs an 8-byte calling-AP-title")
            if not 8 <= len(aarq.authentication_value or b"") <= 64:
                raise _Reject(Diagnostic.AUTHENTICATION_FAILURE, "CtoS challenge not 8..64 bytes")
            self.client_title = aarq.calling_title
            self.ctos = aarq.authentication_value or b""
        if aarq.user_information is None:
            raise _Reject(Diagnostic.NO_REASON_GIVEN, "AARQ without an xDLMS InitiateRequest")
        initiate_bytes = aarq.user_information
        general = False
        if self.ciphered:
            if not is_ciphered(initiate_bytes):
                raise _Reject(
                    Diagnostic.NO_REASON_GIVEN, "ciphered context needs a ciphered InitiateRequest"
                )
            unwrapped = self._decipher(initiate_bytes)
            if isinstance(unwrapped, bytes):
                diagnostic = (
                    Diagnostic.AUTHENTICATION_FAILURE
                    if unwrapped[2] == ServiceError.DECIPHERING_ERROR
                    else Diagnostic.NO_REASON_GIVEN
                )
                raise _Reject(diagnostic, "InitiateRequest rejected by the security layer")
            initiate_bytes, general = unwrapped.apdu, unwrapped.general
        try:
            initiate = x.parse_initiate_request(initiate_bytes)
        except ApduError as exc:
            raise _Reject(Diagnostic.NO_REASON_GIVEN, f"malformed InitiateRequest: {exc}") from None
        conformance = initiate.conformance & SUPPORTED_CONFORMANCE
        error = None
        if initiate.dlms_version < x.DLMS_VERSION:
            error = InitiateError.DLMS_VERSION_TOO_LOW
        elif not conformance & (Conformance.GET | Conformance.SET | Conformance.ACTION):
            error = InitiateError.INCOMPATIBLE_CONFORMANCE
        elif 0 < initiate.max_receive_pdu < MIN_CLIENT_PDU:
            error = InitiateError.PDU_SIZE_TOO_SHORT
        if error is not None:
            raise _Reject(
                Diagnostic.NO_REASON_GIVEN,
                f"InitiateRequest: {error.name}",
                x.initiate_error(error),
            )
        self.max_send = min(initiate.max_receive_pdu or 0xFFFF, self.server_max_pdu)
        response = x.initiate_response(conformance, self.server_max_pdu)
        self._general = general
        if self.ciphered:
            response = self._cipher(response, general)
        if policy.mechanism is Mechanism.HLS_GMAC:
            self.phase = Phase.PENDING_HLS
            self.stoc = os.urandom(16)
            return acse.aare(
                context=policy.context,
                result=Result.ACCEPTED,
                diagnostic=Diagnostic.AUTHENTICATION_REQUIRED,
                system_title=self.meter.system_title,
                mechanism=policy.mechanism,
                challenge=self.stoc,
                user_information=response,
            )
        self.phase = Phase.ASSOCIATED
        return acse.aare(
            context=policy.context,
            result=Result.ACCEPTED,
            diagnostic=Diagnostic.NULL,
            mechanism=policy.mechanism,
            user_information=response,
        )

    def _rlrq(self, request: bytes) -> bytes:
        was = self.phase
        self.phase, self._blocks, self._incoming = Phase.IDLE, None, None
        try:
            rlrq = acse.parse_rlrq(request)
        except AcseError as exc:
            self._warn("malformed RLRQ: %s", exc)
            return acse.rlre()
        info = rlrq.user_information
        if info is None or was is Phase.IDLE:
            return acse.rlre()
        if not (self.ciphered and is_ciphered(info)):
            return acse.rlre(x.initiate_response(SUPPORTED_CONFORMANCE, self.server_max_pdu))
        unwrapped = self._decipher(info)
        if isinstance(unwrapped, bytes):
            return acse.rlre()
        response = x.initiate_response(SUPPORTED_CONFORMANCE, self.server_max_pdu)
        return acse.rlre(self._cipher(response, unwrapped.general))

    # -- xDLMS services -------------------------------------------------------------------
    def _service(self, request: bytes, *, overhead: int) -> bytes:
        if len(request) > SERVER_MAX_PDU:
            return x.exception_response(StateError.SERVICE_NOT_ALLOWED, ServiceError.PDU_TOO_LONG)
        try:
            parsed = x.parse_request(request)
        except UnsupportedService as exc:
            self._warn("%s", exc)
            return x.exception_response(
                StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED
            )
        except ApduError as exc:
            self._warn("malformed request: %s", exc)
            return x.exception_response(StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON)
        role = self.policy.role if self.policy else Role.PUBLIC
        info = AssociationInfo(self.client_sap, role)
        objects = self.meter.objects
        hls_pending = self.phase is Phase.PENDING_HLS
        if isinstance(parsed, x.BlockRequest):
            return self._block_request(parsed)
        self._incoming = None
        if isinstance(parsed, x.ActionRequest):
            target = parsed.target
            if (target.class_id, target.obis, target.index) == (15, O.ASSOCIATION, 1):
                return self._reply_to_hls(parsed)
            return self._action(parsed.invoke, target, parsed.parameters)
        if isinstance(parsed, x.SetRequest):
            if hls_pending:
                return x.set_response_normal(parsed.invoke, DataAccessResult.READ_WRITE_DENIED)
            if self.meter.behaviour.set_answered_as_get:
                return x.get_response_normal(parsed.invoke, axdr.u8(0))
            return x.set_response_normal(
                parsed.invoke, objects.set(parsed.target, parsed.value, role)
            )
        if parsed.kind == 2:
            return self._next_block(parsed, overhead)
        self._blocks = None
        results: list[GetResult] = [
            DataAccessResult.READ_WRITE_DENIED if hls_pending else objects.get(ref, role, info)
            for ref in parsed.items
        ]
        if parsed.kind == 1:
            result = results[0]
            if isinstance(result, DataAccessResult):
                return x.get_response_normal(parsed.invoke, result)
            raw = axdr.encode(result)
            if 4 + len(raw) + overhead <= self.max_send:
                return x.get_response_normal_raw(parsed.invoke, raw)
        else:
            raw = axdr.encode_length(len(results)) + b"".join(
                bytes((0x01, r)) if isinstance(r, DataAccessResult) else b"\x00" + axdr.encode(r)
                for r in results
            )
            if 3 + len(raw) + overhead <= self.max_send:
                return x.get_response_with_list(parsed.invoke, results)
        self._blocks = (parsed.invoke, 0, raw)
        return self._send_block(overhead)

    def _action(self, invoke: int, target: x.Reference, parameters: axdr.Data | None) -> bytes:
        if self.phase is Phase.PENDING_HLS:
            return x.action_response_normal(invoke, DataAccessResult.READ_WRITE_DENIED, None)
        role = self.policy.role if self.policy else Role.PUBLIC
        outcome, data = self.meter.objects.action(target, parameters, role)
        return x.action_response_normal(invoke, outcome, data)

    def _block_request(self, request: x.BlockRequest) -> bytes:
        """Collect a SET value or ACTION parameter sent in blocks; act on the last one."""
        is_set = request.service == x.SET_REQUEST
        self.meter.stats.blocks_received += 1

        def refuse(error: DataAccessResult) -> bytes:
            self._incoming = None
            if is_set:
                return x.set_response_last_datablock(request.invoke, error, request.number)
            return x.action_response_normal(request.invoke, error, None)

        incoming = self._incoming
        if request.target is not None:
            incoming = _Incoming(
                request.service, request.invoke, request.target, request.number, bytearray()
            )
        elif (
            incoming is None
            or incoming.service != request.service
            or request.number != incoming.number + 1
        ):
            return refuse(DataAccessResult.DATA_BLOCK_NUMBER_INVALID)
        incoming.number = request.number
        incoming.raw += request.raw
        if len(incoming.raw) > MAX_BLOCKED_VALUE:
            return refuse(
                DataAccessResult.LONG_SET_ABORTED if is_set else DataAccessResult.OTHER_REASON
            )
        if not request.last:
            self._incoming = incoming
            if is_set:
                return x.set_response_datablock(request.invoke, request.number)
            return x.action_response_next_pblock(request.invoke, request.number)
        self._incoming = None
        try:
            value = axdr.decode_all(bytes(incoming.raw))
        except axdr.AxdrError:
            self._warn("malformed value sent in blocks")
            return refuse(DataAccessResult.TYPE_UNMATCHED)
        if not is_set:
            return self._action(request.invoke, incoming.target, value)
        role = self.policy.role if self.policy else Role.PUBLIC
        result = (
            DataAccessResult.READ_WRITE_DENIED
            if self.phase is Phase.PENDING_HLS
            else self.meter.objects.set(incoming.target, value, role)
        )
        return x.set_response_last_datablock(request.invoke, result, request.number)

    def _send_block(self, overhead: int) -> bytes:
        assert self._blocks is not None
        invoke, number, rest = self._blocks
        size = self.max_send - overhead - _BLOCK_HEADER
        chunk, rest = rest[:size], rest[size:]
        number += 1
        self.meter.stats.blocks_sent += 1
        self._blocks = (invoke, number, rest) if rest else None
        return x.get_response_block(invoke, last=not rest, block=number, raw=chunk)

    def _next_block(self, request: x.GetRequest, overhead: int) -> bytes:
        if self._blocks is None:
            return x.get_response_block_error(
                request.invoke, request.block_number, DataAccessResult.NO_LONG_GET_IN_PROGRESS
            )
        if request.block_number != self._blocks[1]:
            self._blocks = None
            return x.get_response_block_error(
                request.invoke, request.block_number, DataAccessResult.DATA_BLOCK_NUMBER_INVALID
            )
        return self._send_block(overhead)

    def _reply_to_hls(self, request: x.ActionRequest) -> bytes:
        denied = x.action_response_normal(request.invoke, DataAccessResult.READ_WRITE_DENIED, None)
        if self.phase is not Phase.PENDING_HLS or self.client_title is None:
            return denied
        params = request.parameters
        if params is None or params.tag is not Tag.OCTET_STRING:
            self.phase = Phase.IDLE
            self._warn("reply_to_HLS_authentication without an octet-string")
            return denied
        try:
            verify_hls_response(params.octets(), self.client_title, self.meter.keys.keys, self.stoc)
        except CipherError as exc:
            self.phase = Phase.IDLE
            self._warn("HLS pass 3 failed: %s", exc)
            return denied
        self.phase = Phase.ASSOCIATED
        answer = hls_response(
            self.meter.system_title,
            self.meter.state.next_server_ic(),
            self.meter.keys.keys,
            self.ctos,
        )
        return x.action_response_normal(
            request.invoke, DataAccessResult.SUCCESS, axdr.octets(answer)
        )
