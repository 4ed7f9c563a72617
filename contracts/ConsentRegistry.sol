// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ConsentRegistry
/// @notice Records, per patient, the signing address the patient controls and the set of
///         Consent versions (by content hash) that patient has granted and not revoked.
///         Grants and revocations carry an EIP-712 signature by the patient's address, so
///         anyone (typically the FHIR server) may relay them; the patient may also call
///         {grantDirect} / {revokeDirect} from that address, bypassing any server.
/// @dev Only pseudonymous ids (HMAC of the Patient reference under a server secret, computed
///      off chain), addresses and hashes are stored: never identifiers or health data.
///      EIP-712 and ecrecover are implemented here (no imports), with the EIP-2 low-s check.
contract ConsentRegistry {
    /// @dev One storage slot per patient (160 + 64 + 32 bits).
    struct Patient {
        address key;
        uint64 nonce;
        uint32 activeCount;
    }

    /// @dev A pending operator recovery (one slot).
    struct Recovery {
        address newKey;
        uint64 executableAt;
    }

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Custos Consent");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @notice keccak256("BindKey(bytes32 pid,address key,uint256 nonce,uint256 deadline)")
    bytes32 public constant BIND_KEY_TYPEHASH =
        keccak256("BindKey(bytes32 pid,address key,uint256 nonce,uint256 deadline)");
    /// @notice keccak256("Grant(bytes32 pid,bytes32 consentHash,uint256 nonce,uint256 deadline)")
    bytes32 public constant GRANT_TYPEHASH =
        keccak256("Grant(bytes32 pid,bytes32 consentHash,uint256 nonce,uint256 deadline)");
    /// @notice keccak256("Revoke(bytes32 pid,bytes32 consentHash,uint256 nonce,uint256 deadline)")
    bytes32 public constant REVOKE_TYPEHASH =
        keccak256("Revoke(bytes32 pid,bytes32 consentHash,uint256 nonce,uint256 deadline)");
    /// @dev secp256k1n / 2: signatures with a larger s are malleable copies (EIP-2).
    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice The operator: may propose key recoveries, which take effect after {recoveryDelay}.
    address public owner;

    /// @notice Seconds between {proposeRecovery} and the earliest {executeRecovery}.
    uint64 public immutable recoveryDelay;

    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    mapping(bytes32 pid => Patient) private _patients;
    mapping(bytes32 pid => mapping(bytes32 consentHash => bool)) private _active;
    mapping(bytes32 pid => Recovery) private _recoveries;

    /// @notice Patient `pid` is now bound to signing address `key` (first binding, rebinding or recovery).
    event KeyBound(bytes32 indexed pid, address indexed key);
    /// @notice The Consent version with content hash `consentHash` is now active for `pid`.
    event ConsentGranted(bytes32 indexed pid, bytes32 indexed consentHash);
    /// @notice The Consent version with content hash `consentHash` is no longer active for `pid`.
    event ConsentRevoked(bytes32 indexed pid, bytes32 indexed consentHash);
    /// @notice The operator proposed binding `pid` to `newKey`, executable from `executableAt` (unix seconds).
    event RecoveryProposed(bytes32 indexed pid, address newKey, uint64 executableAt);
    /// @notice The pending recovery of `pid` was cancelled by the patient's current key.
    event RecoveryCancelled(bytes32 indexed pid);
    /// @notice Ownership moved from `previousOwner` to `newOwner` (`previousOwner` is zero at deployment).
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The caller is not the owner.
    error NotOwner(address caller);
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice The signature is malformed, malleable, or not by the required address.
    error BadSignature();
    /// @notice The signed deadline `deadline` (unix seconds) has passed.
    error Expired(uint256 deadline);
    /// @notice The signed nonce `given` is not the patient's current nonce `expected`.
    error BadNonce(uint256 expected, uint256 given);
    /// @notice Patient `pid` has no bound key.
    error NoKey(bytes32 pid);
    /// @notice Patient `pid` is already bound to `key`.
    error KeyAlreadyBound(bytes32 pid, address key);
    /// @notice The caller is not the key bound to `pid`.
    error NotKeyHolder(bytes32 pid, address caller);
    /// @notice The consent is already active.
    error AlreadyActive(bytes32 pid, bytes32 consentHash);
    /// @notice The consent is not active.
    error NotActive(bytes32 pid, bytes32 consentHash);
    /// @notice Patient `pid` has no pending recovery.
    error NoRecovery(bytes32 pid);
    /// @notice The pending recovery can only be executed from `executableAt` (unix seconds).
    error RecoveryNotReady(uint64 executableAt);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice The deployer becomes the owner (operator).
    /// @param recoveryDelaySeconds Delay before an operator recovery may be executed (e.g. 7 days).
    constructor(uint64 recoveryDelaySeconds) {
        owner = msg.sender;
        recoveryDelay = recoveryDelaySeconds;
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _buildDomainSeparator();
        emit OwnershipTransferred(address(0), msg.sender);
    }

    // ------------------------------------------------------------------ keys

    /// @notice Binds `pid` to `key`. The first binding needs a signature by `key` itself; a
    ///         rebinding needs a signature by the currently bound key, over the same typed data
    ///         `BindKey(pid, key, nonce, deadline)` (nonce = {nonceOf}). Anyone may relay.
    /// @dev Reverts with {ZeroAddress}, {Expired}, {KeyAlreadyBound}, {BadSignature}. Consumes a nonce.
    function bindKey(bytes32 pid, address key, uint256 deadline, bytes calldata sig) external {
        if (key == address(0)) revert ZeroAddress();
        if (block.timestamp > deadline) revert Expired(deadline);
        Patient storage p = _patients[pid];
        address current = p.key;
        if (current == key) revert KeyAlreadyBound(pid, key);
        uint64 nonce = p.nonce;
        bytes32 digest = _hashTypedData(keccak256(abi.encode(BIND_KEY_TYPEHASH, pid, key, uint256(nonce), deadline)));
        address signer = current == address(0) ? key : current;
        if (_recover(digest, sig) != signer) revert BadSignature();
        p.nonce = nonce + 1;
        _bind(pid, p, key);
    }

    /// @notice Operator: proposes binding `pid` to `newKey` (lost key). Executable by anyone with
    ///         {executeRecovery} after {recoveryDelay}; the current key may {cancelRecovery}.
    ///         Replaces any pending proposal.
    function proposeRecovery(bytes32 pid, address newKey) external onlyOwner {
        if (newKey == address(0)) revert ZeroAddress();
        address current = _patients[pid].key;
        if (current == address(0)) revert NoKey(pid);
        if (current == newKey) revert KeyAlreadyBound(pid, newKey);
        uint64 executableAt = uint64(block.timestamp) + recoveryDelay;
        _recoveries[pid] = Recovery({newKey: newKey, executableAt: executableAt});
        emit RecoveryProposed(pid, newKey, executableAt);
    }

    /// @notice Executes the pending recovery of `pid` once its delay has passed (anyone may call).
    ///         Consumes a nonce, so signatures made by the previous key are void.
    function executeRecovery(bytes32 pid) external {
        Recovery memory r = _recoveries[pid];
        if (r.newKey == address(0)) revert NoRecovery(pid);
        if (block.timestamp < r.executableAt) revert RecoveryNotReady(r.executableAt);
        delete _recoveries[pid];
        Patient storage p = _patients[pid];
        p.nonce += 1;
        _bind(pid, p, r.newKey);
    }

    /// @notice The key bound to `pid` cancels the pending recovery of `pid`.
    function cancelRecovery(bytes32 pid) external {
        if (msg.sender != _patients[pid].key) revert NotKeyHolder(pid, msg.sender);
        if (_recoveries[pid].newKey == address(0)) revert NoRecovery(pid);
        delete _recoveries[pid];
        emit RecoveryCancelled(pid);
    }

    // --------------------------------------------------------------- consent

    /// @notice Activates `consentHash` for `pid`, with an EIP-712 `Grant` signature by the patient's key.
    /// @dev Reverts with {Expired}, {NoKey}, {BadNonce}, {BadSignature}, {AlreadyActive}.
    function grant(bytes32 pid, bytes32 consentHash, uint256 nonce, uint256 deadline, bytes calldata sig) external {
        Patient storage p = _checkSigned(GRANT_TYPEHASH, pid, consentHash, nonce, deadline, sig);
        _grant(pid, p, consentHash);
    }

    /// @notice Deactivates `consentHash` for `pid`, with an EIP-712 `Revoke` signature by the patient's key.
    /// @dev Reverts with {Expired}, {NoKey}, {BadNonce}, {BadSignature}, {NotActive}.
    function revoke(bytes32 pid, bytes32 consentHash, uint256 nonce, uint256 deadline, bytes calldata sig) external {
        Patient storage p = _checkSigned(REVOKE_TYPEHASH, pid, consentHash, nonce, deadline, sig);
        _revoke(pid, p, consentHash);
    }

    /// @notice The patient's bound key activates `consentHash` itself (no signature, no nonce).
    function grantDirect(bytes32 pid, bytes32 consentHash) external {
        _grant(pid, _holder(pid), consentHash);
    }

    /// @notice The patient's bound key deactivates `consentHash` itself (no signature, no nonce).
    function revokeDirect(bytes32 pid, bytes32 consentHash) external {
        _revoke(pid, _holder(pid), consentHash);
    }

    // ----------------------------------------------------------------- views

    /// @notice The signing address bound to `pid` (zero if none).
    function keyOf(bytes32 pid) external view returns (address) {
        return _patients[pid].key;
    }

    /// @notice The nonce the next signed BindKey / Grant / Revoke for `pid` must carry.
    function nonceOf(bytes32 pid) external view returns (uint256) {
        return _patients[pid].nonce;
    }

    /// @notice Whether `consentHash` is active for `pid`.
    function isActive(bytes32 pid, bytes32 consentHash) external view returns (bool) {
        return _active[pid][consentHash];
    }

    /// @notice How many consent hashes are active for `pid`.
    function activeCount(bytes32 pid) external view returns (uint256) {
        return _patients[pid].activeCount;
    }

    /// @notice The pending recovery of `pid` (zero address if none) and when it becomes executable.
    function pendingRecovery(bytes32 pid) external view returns (address newKey, uint64 executableAt) {
        Recovery memory r = _recoveries[pid];
        return (r.newKey, r.executableAt);
    }

    /// @notice The EIP-712 domain separator (name "Custos Consent", version "1", this chain, this contract).
    function domainSeparator() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _buildDomainSeparator();
    }

    // ----------------------------------------------------------------- admin

    /// @notice Hands the operator role to `newOwner`. Owner only.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // -------------------------------------------------------------- internal

    function _bind(bytes32 pid, Patient storage p, address key) private {
        p.key = key;
        emit KeyBound(pid, key);
    }

    function _holder(bytes32 pid) private view returns (Patient storage p) {
        p = _patients[pid];
        if (p.key == address(0)) revert NoKey(pid);
        if (msg.sender != p.key) revert NotKeyHolder(pid, msg.sender);
    }

    function _checkSigned(bytes32 typehash, bytes32 pid, bytes32 consentHash, uint256 nonce, uint256 deadline, bytes calldata sig)
        private
        returns (Patient storage p)
    {
        if (block.timestamp > deadline) revert Expired(deadline);
        p = _patients[pid];
        address key = p.key;
        if (key == address(0)) revert NoKey(pid);
        uint64 current = p.nonce;
        if (nonce != current) revert BadNonce(current, nonce);
        bytes32 digest = _hashTypedData(keccak256(abi.encode(typehash, pid, consentHash, nonce, deadline)));
        if (_recover(digest, sig) != key) revert BadSignature();
        p.nonce = current + 1;
    }

    function _grant(bytes32 pid, Patient storage p, bytes32 consentHash) private {
        mapping(bytes32 => bool) storage set = _active[pid];
        if (set[consentHash]) revert AlreadyActive(pid, consentHash);
        set[consentHash] = true;
        p.activeCount += 1;
        emit ConsentGranted(pid, consentHash);
    }

    function _revoke(bytes32 pid, Patient storage p, bytes32 consentHash) private {
        mapping(bytes32 => bool) storage set = _active[pid];
        if (!set[consentHash]) revert NotActive(pid, consentHash);
        set[consentHash] = false;
        p.activeCount -= 1;
        emit ConsentRevoked(pid, consentHash);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _hashTypedData(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @dev The signer of `digest` from a 65-byte (r, s, v) signature; zero for anything
    ///      malformed or malleable (s in the upper half, v not 27/28), or an invalid signature.
    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address signer) {
        if (sig.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly {
            r := calldataload(sig.offset)
            s := calldataload(add(sig.offset, 32))
            v := byte(0, calldataload(add(sig.offset, 64)))
        }
        if (uint256(s) > HALF_N) return address(0);
        if (v != 27 && v != 28) return address(0);
        signer = ecrecover(digest, v, r, s);
    }
}
