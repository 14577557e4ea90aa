// Prototype (benchmark experiment, not shipped): the seed's GET /api/firmware answered inside nginx
// with njs, from the same static site the Python shim reads (design.md §2 and §4).
// Mirrors otapub/shim.py's check(): parameters, MAC and version validation, token canonicalisation,
// the answer file d/<TOKEN>/<MAC12>.json, hardware and version decision. The check-in is logged by
// nginx's access_log (see bench_shim.py's njs config), one line per request, append-only.
import fs from 'fs';

const SPELLINGS = /^(?:[0-9A-Fa-f]{2}([:\-])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}|[0-9A-Fa-f]{12})$/;
const VERSION = /^[vV]?(\d{1,9}(?:\.\d{1,9})*)$/;
const TOKEN = /^[0-9A-Fa-f]{1,64}$/;
const REQUIRED = ['device_id', 'hardware', 'version', 'mac'];

function version(text) {
    const m = VERSION.exec(text.trim());
    if (!m) return null;
    const parts = m[1].split('.').map(Number);
    while (parts.length > 1 && parts[parts.length - 1] === 0) parts.pop();
    return parts;
}

function newer(a, b) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
        const x = a[i] || 0, y = b[i] || 0;
        if (x !== y) return x > y;
    }
    return false;
}

function reply(r, status, body, decision) {
    r.variables.otapub_decision = decision;
    r.headersOut['Content-Type'] = 'application/json';
    r.headersOut['Cache-Control'] = 'no-store';
    r.return(status, JSON.stringify(body));
}

function check(r) {
    const args = r.args;
    const values = {};
    const missing = [];
    for (let i = 0; i < REQUIRED.length; i++) {
        const name = REQUIRED[i];
        let v = args[name];
        if (Array.isArray(v)) v = v[0];
        v = v === undefined ? '' : decodeURIComponent(String(v).replace(/\+/g, ' ')).slice(0, 128);
        values[name] = v;
        if (!v) missing.push(name);
    }
    if (missing.length) return reply(r, 400, {error: 'Missing required parameters: ' + missing.join(', ')}, 'bad_request');
    const mac = values.mac.trim();
    if (!SPELLINGS.test(mac)) return reply(r, 400, {error: 'Invalid MAC address format'}, 'bad_request');
    const mac12 = mac.replace(/[:\-.\s]/g, '').toUpperCase();
    const reported = version(values.version);
    if (!reported) return reply(r, 400, {error: 'Invalid version format'}, 'bad_request');
    let token = (r.headersIn['X-Device-Auth'] || '').trim();
    if (!TOKEN.test(token)) return reply(r, 401, {error: 'Authentication failed'}, 'auth_failed');
    token = token.toUpperCase().padStart(8, '0');
    let answer;
    try {
        answer = JSON.parse(fs.readFileSync(r.variables.document_root + '/d/' + token + '/' + mac12 + '.json'));
    } catch (e) {
        return reply(r, 401, {error: 'Authentication failed'}, 'auth_failed');
    }
    const target = answer.firmware_version;
    const allowed = answer.release_hardware;
    if (!target) return reply(r, 200, {update_available: false}, 'no_target');
    if (allowed && allowed.indexOf(values.hardware) < 0) return reply(r, 200, {update_available: false}, 'hardware_mismatch');
    if (!newer(version(target), reported)) return reply(r, 200, {update_available: false}, 'up_to_date');
    let url = answer.firmware_url;
    if (url.startsWith('/')) url = r.variables.scheme + '://' + r.headersIn.Host + url;
    return reply(r, 200, {update_available: true, firmware_version: target, firmware_url: url,
                          checksum: answer.checksum, sha256: answer.sha256, size: answer.size}, 'update_offered');
}

export default {check};
