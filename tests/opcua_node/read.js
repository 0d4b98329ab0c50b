#!/usr/bin/env node
// Read the dcim BMS simulator with node-opcua, a second OPC UA stack, and print JSON.
//
//   node read.js --endpoint opc.tcp://127.0.0.1:PORT/dcim/bms --namespace urn:... \
//       [--nodes CH-1.ElectricalPower,CH-1.Status]      (default: browse Objects/BMS, read all)
//       --pki DIR [--security None|Sign|SignAndEncrypt] [--cert C.pem --key K.pem --app-uri URI]
//
// The namespace index is resolved from the server's NamespaceArray, never assumed.
// Output: one stdout line "DCIM-RESULT {json}" with {"namespaceIndex", "tree": {folder:
// [device]}, "values": {"<string id>": {"value", "status", "sourceTimestamp"}}}; on error
// {"error"} and exit 2.
"use strict";

const path = require("path");
const {
    OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, NodeClass, resolveNodeId,
} = require("node-opcua-client");
// node-opcua-client depends on it (exact version) but does not re-export it.
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

// node-opcua logs to stdout too: the result is the one line that starts with the marker.
const MARKER = "DCIM-RESULT ";

function emit(result) {
    process.stdout.write(MARKER + JSON.stringify(result) + "\n");
}

function parseArgs(argv) {
    const args = { security: "None", nodes: null };
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
        args[key] = argv[i + 1];
    }
    if (!args.endpoint || !args.namespace || !args.pki) {
        throw new Error("usage: read.js --endpoint URL --namespace URI --pki DIR [--nodes a,b] ...");
    }
    return args;
}

async function children(session, nodeId, nodeClass) {
    const result = await session.browse({
        nodeId, referenceTypeId: "HierarchicalReferences", includeSubtypes: true,
        browseDirection: 0, nodeClassMask: nodeClass, resultMask: 63,
    });
    return result.references || [];
}

async function browseBms(session, ns) {
    const tree = {};
    const ids = [];
    const top = await children(session, resolveNodeId("ObjectsFolder"), NodeClass.Object);
    const bms = top.find((r) => r.browseName.namespaceIndex === ns && r.browseName.name === "BMS");
    if (!bms) throw new Error("no BMS folder under Objects in namespace " + ns);
    for (const folder of await children(session, bms.nodeId, NodeClass.Object)) {
        tree[folder.browseName.name] = [];
        for (const device of await children(session, folder.nodeId, NodeClass.Object)) {
            tree[folder.browseName.name].push(device.browseName.name);
            for (const v of await children(session, device.nodeId, NodeClass.Variable)) {
                if (v.browseName.namespaceIndex === ns) ids.push(v.nodeId.value);
            }
        }
    }
    return { tree, ids };
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const secure = args.security !== "None";
    const options = {
        applicationName: "dcim-node-check", endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        securityMode: MessageSecurityMode[args.security],
        securityPolicy: secure ? SecurityPolicy.Basic256Sha256 : SecurityPolicy.None,
    };
    // Own PKI folder (never the home folder); the server's certificate is accepted unseen.
    const manager = new OPCUACertificateManager({
        rootFolder: path.resolve(args.pki), automaticallyAcceptUnknownCertificate: true,
        disableFileWatchers: true,
    });
    await manager.initialize();
    options.clientCertificateManager = manager;
    if (args.cert) {
        Object.assign(options, {
            certificateFile: args.cert, privateKeyFile: args.key, applicationUri: args.appUri,
        });
    }
    const client = OPCUAClient.create(options);
    await client.connect(args.endpoint);
    try {
        const session = await client.createSession();
        const nsArray = (await session.read({ nodeId: "i=2255", attributeId: AttributeIds.Value }))
            .value.value;
        const ns = nsArray.indexOf(args.namespace);
        if (ns < 0) throw new Error(`namespace ${args.namespace} not in ${nsArray}`);
        let tree = null;
        let ids = args.nodes ? args.nodes.split(",") : null;
        if (!ids) ({ tree, ids } = await browseBms(session, ns));
        const results = await session.read(
            ids.map((id) => ({ nodeId: `ns=${ns};s=${id}`, attributeId: AttributeIds.Value })));
        const values = {};
        ids.forEach((id, i) => {
            const dv = results[i];
            values[id] = {
                value: dv.value.value, status: dv.statusCode.name,
                sourceTimestamp: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
            };
        });
        await session.close();
        emit({ namespaceIndex: ns, tree, values });
    } finally {
        await client.disconnect();
    }
}

main().catch((err) => {
    emit({ error: String((err && err.message) || err) });
    process.exit(2);
});
