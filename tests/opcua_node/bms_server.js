#!/usr/bin/env node
// A third-party BMS for the interop test: a node-opcua server that dcim knows nothing about.
//
//   BMS_PASSWORD=... node bms_server.js --port N --pki DIR --served FILE
//       [--user NAME] [--trust-client CERT.der] [--offset-ms 1500] [--period-ms 200]
//
// - its own namespace (urn:acme:bms) with objects in folders: Objects/BMS/CRAH/CRAH-1..2
//   (SupplyTemp, ReturnTemp: Double AnalogItems with EngineeringUnits degC; Status: Int32;
//   FanRunning: Boolean) and Objects/BMS/Chillers/CH-1 (ChwSupplyTemp, Power);
// - values change every --period-ms, each with a SourceTimestamp --offset-ms BEFORE the
//   moment it is set, and that moment as its ServerTimestamp (a collector that stores its
//   receive time, or the server's, is off by about that much);
// - Basic256Sha256 SignAndEncrypt only (no None endpoint: GetEndpoints still answers on a
//   None channel, as OPC UA requires); anonymous refused, one user (password from env
//   BMS_PASSWORD, never argv); its certificate made by node-opcua in DIR/server; client
//   certificates trusted only when in DIR/server/trusted (--trust-client puts one there);
// - listens on 127.0.0.1 only.
// Stdout: "BMS-READY <endpoint>" once serving. Every value served is appended to --served
// as a JSON line {"node": "<string id>", "value": v, "source_ms": epoch ms}.
"use strict";

const fs = require("fs");
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { DataType, DataValue, MessageSecurityMode, SecurityPolicy, StatusCodes, Variant } =
    require("node-opcua-client");
// node-opcua-server depends on these (exact versions) but does not re-export them.
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { standardUnits } = require("node-opcua-data-access");

const NAMESPACE = "urn:acme:bms";

function parseArgs(argv) {
    const args = { user: "bms", offsetMs: "1500", periodMs: "200" };
    for (let i = 0; i < argv.length; i += 2) {
        const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
        args[key] = argv[i + 1];
    }
    if (!args.port || !args.pki || !args.served || !process.env.BMS_PASSWORD) {
        throw new Error("usage: BMS_PASSWORD=... bms_server.js --port N --pki DIR --served FILE");
    }
    return args;
}

// What each object holds: [browse name, data type, unit or null, value at tick n].
const CRAH = (k) => [
    ["SupplyTemp", DataType.Double, standardUnits.degree_celsius, (n) => 18 + k + (n % 50) / 8],
    ["ReturnTemp", DataType.Double, standardUnits.degree_celsius, (n) => 28 + k + (n % 40) / 16],
    ["Status", DataType.Int32, null, (n) => (n + k) % 4],
    ["FanRunning", DataType.Boolean, null, (n) => (n + k) % 2 === 0],
];
const CHILLER = [
    ["ChwSupplyTemp", DataType.Double, standardUnits.degree_celsius, (n) => 7 + (n % 30) / 32],
    ["Power", DataType.Double, standardUnits.kilowatt, (n) => 150 + (n % 64) / 4],
];
const PLANT = { CRAH: { "CRAH-1": CRAH(0), "CRAH-2": CRAH(1) }, Chillers: { "CH-1": CHILLER } };

function build(server) {
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(NAMESPACE);
    const bms = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "BMS" });
    const variables = [];
    for (const [folderName, objects] of Object.entries(PLANT)) {
        const folder = ns.addFolder(bms, { browseName: folderName });
        for (const [objectName, members] of Object.entries(objects)) {
            const object = ns.addObject({ organizedBy: folder, browseName: objectName });
            for (const [name, dataType, unit, valueAt] of members) {
                const options = {
                    componentOf: object, browseName: name, nodeId: `s=${objectName}.${name}`,
                    dataType, minimumSamplingInterval: 100,
                };
                const node = unit
                    ? ns.addAnalogDataItem({ ...options, engineeringUnits: unit,
                        engineeringUnitsRange: { low: -50, high: 1000 } })
                    : ns.addVariable(options);
                variables.push({ id: `${objectName}.${name}`, node, dataType, valueAt });
            }
        }
    }
    return variables;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const pki = path.resolve(args.pki, "server");
    const manager = new OPCUACertificateManager({
        rootFolder: pki, automaticallyAcceptUnknownCertificate: false, disableFileWatchers: true,
    });
    await manager.initialize();
    if (args.trustClient) {
        await manager.trustCertificate(fs.readFileSync(args.trustClient));
    }
    const server = new OPCUAServer({
        port: Number(args.port), host: "127.0.0.1", hostname: "127.0.0.1",
        resourcePath: "/acme/bms",
        securityPolicies: [SecurityPolicy.Basic256Sha256],
        securityModes: [MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: false,
        userManager: {
            isValidUser: (user, password) => user === args.user
                && password === process.env.BMS_PASSWORD,
        },
        serverCertificateManager: manager,
        serverInfo: { applicationUri: "urn:acme:bms:server", productUri: "urn:acme:bms",
            applicationName: { text: "ACME BMS" } },
        buildInfo: { productName: "ACME BMS", manufacturerName: "ACME" },
    });
    await server.initialize();
    const variables = build(server);
    const served = fs.openSync(args.served, "a");
    const offset = Number(args.offsetMs);
    let tick = 0;
    const update = () => {
        const now = Date.now();
        const source = new Date(now - offset);
        const lines = [];
        for (const v of variables) {
            const value = v.valueAt(tick);
            // setValueFromSource would copy the source time into the ServerTimestamp and
            // writeValue needs a client-writable node: set the whole DataValue instead.
            v.node._internal_set_dataValue(new DataValue({
                value: new Variant({ dataType: v.dataType, value }), statusCode: StatusCodes.Good,
                sourceTimestamp: source, serverTimestamp: new Date(now),
            }));
            lines.push(JSON.stringify({ node: v.id, value, source_ms: source.getTime() }));
        }
        fs.writeSync(served, lines.join("\n") + "\n");
        tick += 1;
    };
    update();
    const timer = setInterval(update, Number(args.periodMs));
    await server.start();
    process.stdout.write(`BMS-READY ${server.getEndpointUrl()}\n`);
    const stop = async () => {
        clearInterval(timer);
        await server.shutdown(0);
        fs.closeSync(served);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    process.stderr.write(`bms_server: ${(err && err.stack) || err}\n`);
    process.exit(2);
});
