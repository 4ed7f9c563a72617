// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title AnchorRegistry
/// @notice Records Merkle roots of batches of FHIR resource-version hashes (RFC 9162 trees),
///         so that anyone holding a version and its inclusion proof can check, against this
///         contract alone, that the version existed unchanged when its batch was anchored.
/// @dev Only roots and leaf counts are stored: never identifiers or health data. Each root
///      costs exactly one fresh storage slot (batch id, leaf count, block number and block
///      timestamp packed as four uint64s), which keeps an anchor transaction near 50k gas
///      whatever the batch size.
contract AnchorRegistry {
    /// @dev One storage slot per anchored root (4 x 64 bits).
    struct Anchor {
        uint64 batchId;
        uint64 leafCount;
        uint64 blockNumber;
        uint64 timestamp;
    }

    /// @notice The account that manages the set of anchorers.
    address public owner;

    /// @notice Accounts allowed to call {anchor}.
    mapping(address account => bool allowed) public isAnchorer;

    mapping(bytes32 root => Anchor) private _anchors;

    /// @notice A batch root was recorded.
    /// @param root The RFC 9162 Merkle tree head of the batch.
    /// @param batchId The anchoring server's batch number.
    /// @param leafCount The number of leaves (resource versions) in the tree.
    /// @param anchorer The account that sent the transaction.
    event Anchored(bytes32 indexed root, uint64 indexed batchId, uint64 leafCount, address anchorer);

    /// @notice `account` was allowed (`allowed` = true) or denied the right to anchor.
    event AnchorerSet(address indexed account, bool allowed);

    /// @notice Ownership moved from `previousOwner` to `newOwner` (`previousOwner` is zero at deployment).
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice The caller is not the owner.
    error NotOwner(address caller);
    /// @notice The caller is not an anchorer.
    error NotAnchorer(address caller);
    /// @notice A zero root was given.
    error ZeroRoot();
    /// @notice A zero leaf count was given.
    error ZeroLeafCount();
    /// @notice The zero address was given where an account is required.
    error ZeroAddress();
    /// @notice `root` was already anchored, in block `blockNumber`.
    error AlreadyAnchored(bytes32 root, uint64 blockNumber);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice The deployer becomes the owner and an anchorer.
    constructor() {
        owner = msg.sender;
        isAnchorer[msg.sender] = true;
        emit OwnershipTransferred(address(0), msg.sender);
        emit AnchorerSet(msg.sender, true);
    }

    /// @notice Records `root`, the head of a Merkle tree of `leafCount` leaves built for batch `batchId`.
    /// @dev Reverts with {NotAnchorer}, {ZeroRoot}, {ZeroLeafCount} or {AlreadyAnchored}.
    /// @param root The tree head (non-zero).
    /// @param leafCount The number of leaves (non-zero).
    /// @param batchId The anchoring server's batch number (informational; not required to be unique).
    function anchor(bytes32 root, uint64 leafCount, uint64 batchId) external {
        if (!isAnchorer[msg.sender]) revert NotAnchorer(msg.sender);
        if (root == bytes32(0)) revert ZeroRoot();
        if (leafCount == 0) revert ZeroLeafCount();
        Anchor storage a = _anchors[root];
        // leafCount is never zero once anchored, so it marks a used slot.
        if (a.leafCount != 0) revert AlreadyAnchored(root, a.blockNumber);
        _anchors[root] = Anchor({
            batchId: batchId,
            leafCount: leafCount,
            blockNumber: uint64(block.number),
            timestamp: uint64(block.timestamp)
        });
        emit Anchored(root, batchId, leafCount, msg.sender);
    }

    /// @notice When and how `root` was anchored; all zeros if it never was.
    /// @param root A tree head.
    /// @return blockNumber The block that recorded it.
    /// @return timestamp That block's timestamp (unix seconds).
    /// @return leafCount The tree size recorded with it.
    /// @return batchId The batch number recorded with it.
    function anchoredAt(bytes32 root)
        external
        view
        returns (uint64 blockNumber, uint64 timestamp, uint64 leafCount, uint64 batchId)
    {
        Anchor memory a = _anchors[root];
        return (a.blockNumber, a.timestamp, a.leafCount, a.batchId);
    }

    /// @notice Allows (`allowed` = true) or denies `account` the right to anchor. Owner only.
    /// @param account The account (non-zero).
    /// @param allowed Whether it may call {anchor}.
    function setAnchorer(address account, bool allowed) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        isAnchorer[account] = allowed;
        emit AnchorerSet(account, allowed);
    }

    /// @notice Hands the management of anchorers to `newOwner`. Owner only. Anchorer rights
    ///         are not changed: the new owner may need {setAnchorer} to anchor itself.
    /// @param newOwner The new owner (non-zero).
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }
}
