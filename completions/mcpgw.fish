# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mcpgw_global_optspecs
    string join \n control-socket= data-dir= json h/help V/version
end

function __fish_mcpgw_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mcpgw_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mcpgw_using_subcommand
    set -l cmd (__fish_mcpgw_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mcpgw -n "__fish_mcpgw_needs_command" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_needs_command" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_needs_command" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "serve" -d 'Run the gateway'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "cert" -d 'Make a test PKI, or rotate the running gateway\'s certificate'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "status" -d 'Show the running gateway\'s status (through the control socket)'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "gateway" -d 'Manage upstream MCP servers (through the control socket)'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "token" -d 'Bearer tokens for the gateway\'s HTTP listener'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "call" -d 'Send one MCP/JSON-RPC request and print its result: through the control socket, or as a real MCP client of --url'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "connect" -d 'Be a stdio MCP server that relays to a remote MCP endpoint over Streamable HTTP (what a desktop client\'s config runs as a command)'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "probe" -d 'Check an upstream MCP endpoint phase by phase (DNS, TCP, TLS, HTTP, MCP, tools/list)'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "policy" -d 'Explain what the policy of a config file decides'
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l config -d 'Config file (TOML)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l listen -d 'Address to listen on [default: 127.0.0.1:4444]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-cert -d 'Serving certificate chain (PEM); enables HTTPS' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-key -d 'Private key of the serving certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-ca -d 'CA that must have issued the serving certificate; a reload to a certificate it did not issue is refused' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l client-ca -d 'CA bundle for client certificates: clients must present one it issued (downstream mTLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-watch-interval -d 'Seconds between looks at the certificate files (and the upstreams\') for a change, which reloads them as SIGHUP does; 0 turns the watch off [default: 1]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l log-format -d 'Log format [default: text]' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l store -d 'Where registrations live: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE] for a database several instances share [default: SQLite in the data directory]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l advertise -d 'Where the other instances on a shared store reach this one (http:// or https://HOST:PORT), for the legacy SSE messages they forward here [default: `[store] advertise`, else the listen address when it names one host]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l workers -d 'Worker threads of the async runtime [default: one per CPU core]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l upstream-spin-us -d 'How long, in microseconds, a call made while the gateway was idle watches its upstream socket before its thread parks [default: 100; 0 never]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l health-interval -d 'Seconds between upstream health checks [default: 30]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l health-threshold -d 'Consecutive failed checks before an upstream is offline [default: 3]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l request-timeout -d 'Seconds an upstream request may take [default: 30]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l shutdown-grace -d 'Seconds that in-flight requests get to finish on SIGTERM/SIGINT [default: 30]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l allow-insecure-bind -d 'Allow listening on a non-loopback address without TLS'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l no-auth -d 'Turn bearer auth off (refused unless the listen address is loopback)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l check-config -d 'Validate the configuration and the serving certificate, print a summary and exit (0: usable, 1: not); binds nothing, creates nothing'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l upgrade -d 'Replace the gateway running on this data directory without refusing a connection: take its listening sockets (and control socket) over, serve on them, then have it drain and exit. Fails (exit 1) when no gateway runs there. --listen is not used: the address is the running gateway\'s'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l listen-stdin -d 'Serve on the listening TCP socket given as standard input instead of binding --listen: systemd socket activation (`StandardInput=socket` in the service, `Accept=no` in the socket unit) or any launcher that hands over a bound socket. The same rules apply to its address as to --listen\'s (plain HTTP only on loopback unless allowed)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -f -a "gen" -d 'Write a test PKI: ca.crt ca.key server.crt server.key client.crt client.key'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -f -a "rotate" -d 'Install a new serving certificate in the running gateway without dropping a connection'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and not __fish_seen_subcommand_from gen rotate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l out -d 'Output directory (created if missing)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l cn -d 'Common name of the server certificate' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l client-cn -d 'Common name of the client certificate' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l san -d 'Extra subject alternative name (DNS name or IP address) for the server certificate; repeatable. localhost, 127.0.0.1 and ::1 are always included' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l days -d 'Validity in days' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l key-type -d 'Key algorithm' -r -f -a "ecdsa-p256\t'ECDSA on P-256 with SHA-256'
ed25519\t'Ed25519'
rsa2048\t'RSA 2048 bits, PKCS#1 v1.5 with SHA-256'
rsa4096\t'RSA 4096 bits, PKCS#1 v1.5 with SHA-256'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l force -d 'Overwrite existing files'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from gen" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l cert -d 'New certificate chain (PEM) to install' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l key -d 'Private key of the new certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l ca-cert -d 'CA certificate for --issue' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l ca-key -d 'CA private key for --issue' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l san -d 'Subject alternative names for --issue [default: those of the certificate now served]; repeatable' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l days -d 'Validity in days for --issue' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l key-type -d 'Key algorithm for --issue' -r -f -a "ecdsa-p256\t'ECDSA on P-256 with SHA-256'
ed25519\t'Ed25519'
rsa2048\t'RSA 2048 bits, PKCS#1 v1.5 with SHA-256'
rsa4096\t'RSA 4096 bits, PKCS#1 v1.5 with SHA-256'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l wait -d 'Seconds to wait for every instance\'s outcome with --all' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l issue -d 'Mint a new server certificate from a CA'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l no-verify-handshake -d 'Skip the confirming TLS handshake against the listener'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l all -d 'Install the pair on every instance sharing the store (PostgreSQL), each checking it before it swaps, and print one line per instance; on SQLite, the local rotate'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "gen" -d 'Write a test PKI: ca.crt ca.key server.crt server.key client.crt client.key'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "rotate" -d 'Install a new serving certificate in the running gateway without dropping a connection'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand status" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand status" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand status" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand status" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand status" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -f -a "add" -d 'Register an upstream: connect, initialize, list its catalog, store it'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -f -a "list" -d 'List registered upstreams with their health'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -f -a "show" -d 'Show one upstream: TLS identity, health, protocol, tools, warnings'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -f -a "remove" -d 'Remove an upstream'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and not __fish_seen_subcommand_from add list show remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l transport -d 'Transport [default: sse when the URL path ends in /sse, else streamable-http]' -r -f -a "sse\t'Legacy HTTP+SSE: GET the stream, POST to the `endpoint` it announces'
streamable-http\t'Streamable HTTP: POST JSON-RPC, answers as JSON or SSE'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l command -d 'Run this program as a stdio upstream (the gateway starts and supervises it) instead of reaching a URL' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l arg -d 'An argument of the program; repeatable, in order' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l env -d 'An environment variable of the program, K=V; repeatable. Values are never shown' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l env-file -d 'A file of K=V lines for the program\'s environment, read at each start' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l cwd -d 'The program\'s working directory [default: the gateway\'s]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l memory-mib -d 'The program\'s address-space limit, in MiB' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l open-files -d 'The program\'s open-file limit' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l cpu-secs -d 'The program\'s CPU-time limit, in seconds' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l ca-cert -d 'CA bundle to verify the server with [default: the system\'s trusted roots]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l client-cert -d 'Client certificate chain (PEM) to present when the server asks for one (mutual TLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l client-key -d 'Private key of the client certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l server-name -d 'Name to verify the server\'s certificate against (and send as SNI) when the URL holds an IP address' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l bearer -d 'Bearer token to send upstream' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l header -d 'Extra header to send upstream, \'Name: value\'; repeatable' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l era -d 'Protocol era to speak upstream; auto follows each client\'s era where the upstream speaks both' -r -f -a "auto\t'Ask `server/discover` first and fall back to `initialize`; where the upstream speaks both, each client gets the era it speaks itself (a session-era client its own `initialize`d upstream session, a 2026-07-28 client stateless requests)'
2025-11-25\t'Always the session era (`initialize`, `Mcp-Session-Id`), never `server/discover`'
2026-07-28\t'Always the stateless 2026-07-28 era: no sessions, so no per-client upstream sessions'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l isolate -d 'One process per client session (for servers that keep per-user state) [default: one process shared by every client]'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l inherit-env -d 'Pass the gateway\'s whole environment to the program [default: PATH, HOME, LANG and what --env and --env-file give]'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l defer -d 'Store the upstream even if it cannot be reached now (it starts offline)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l shared-session -d 'One upstream session shared by every client, for a server known to keep no state per session [default: one upstream session per downstream session]'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from list" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from list" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from list" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from show" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from show" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from show" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from remove" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from remove" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from remove" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "add" -d 'Register an upstream: connect, initialize, list its catalog, store it'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "list" -d 'List registered upstreams with their health'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one upstream: TLS identity, health, protocol, tools, warnings'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove an upstream'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand gateway; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -f -a "create" -d 'Print a bearer token (HS256 JWT) that the gateway using this data dir accepts'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and not __fish_seen_subcommand_from create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l ttl -d 'Lifetime, e.g. 30m, 12h, 7d' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l sub -d 'Subject of the token' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l role -d 'What the holder may reach: `client` (the MCP endpoints) or `admin` (also the registry, certificates and admin routes)' -r -f -a "client\t'The MCP endpoints only'
admin\t'Everything'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l scope -d 'A scope the token carries, for policy rules (repeatable)' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "create" -d 'Print a bearer token (HS256 JWT) that the gateway using this data dir accepts'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand token; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l url -d 'Talk to this MCP endpoint directly instead of the gateway\'s control socket' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l transport -d 'Transport for --url [default: sse when the path ends in /sse, else streamable-http]' -r -f -a "sse\t'Legacy HTTP+SSE: GET the stream, POST to the `endpoint` it announces'
streamable-http\t'Streamable HTTP: POST JSON-RPC, answers as JSON or SSE'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l bearer -d 'Bearer token for --url' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l ca-cert -d 'CA bundle to verify the server with [default: the system\'s trusted roots]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l client-cert -d 'Client certificate chain (PEM) to present when the server asks for one (mutual TLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l client-key -d 'Private key of the client certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l server-name -d 'Name to verify the server\'s certificate against (and send as SNI) when the URL holds an IP address' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l timeout -d 'Seconds to wait for the answer' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand call" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l bearer -d 'Bearer token to send (prefer --bearer-file or MCPGW_BEARER: arguments are visible to other users of the machine)' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l bearer-file -d 'File holding the bearer token: read at start, and again when the server answers 401, so that a token rotated in the file is picked up' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l ca-cert -d 'CA bundle to verify the server with [default: the system\'s trusted roots]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l client-cert -d 'Client certificate chain (PEM) to present when the server asks for one (mutual TLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l client-key -d 'Private key of the client certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l server-name -d 'Name to verify the server\'s certificate against (and send as SNI) when the URL holds an IP address' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l header -d 'Extra header to send with every request, \'Name: value\'; repeatable' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l timeout -d 'Seconds to wait for each answer, and to keep retrying a server that refuses connections (while it restarts) before the client gets an error' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand connect" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l ca-cert -d 'CA bundle to verify the server with [default: the system\'s trusted roots]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l client-cert -d 'Client certificate chain (PEM) to present when the server asks for one (mutual TLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l client-key -d 'Private key of the client certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l server-name -d 'Name to verify the server\'s certificate against (and send as SNI) when the URL holds an IP address' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l transport -d 'How to speak MCP to the upstream' -r -f -a "sse\t'Legacy HTTP+SSE: GET the stream, POST to the `endpoint` it announces'
streamable-http\t'Streamable HTTP: POST JSON-RPC, answers as JSON or SSE'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l timeout -d 'Seconds each phase may take' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand probe" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Say whether a principal may reach a tool, prompt or resource, and which rule decides'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l config -d 'The config file whose `[policy]` is asked [default: ./mcpgw.toml]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l principal -d 'The principal, as the gateway names it: `token:NAME`, `jwt:SUB`, `cert:NAME`, `oauth:ISSUER#SUB`' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l role -d 'Its role' -r -f -a "client\t'The MCP endpoints only'
admin\t'Everything'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l scope -d 'A scope it carries (repeatable)' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l claim -d 'A claim of its token, `NAME=VALUE` (repeatable)' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l tool -d 'A tool: `<upstream><separator><name>` as `/mcp` lists it, or its own name with --upstream' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l prompt -d 'A prompt, named like --tool' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l resource -d 'A resource URI (with --upstream)' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l upstream -d 'The upstream it belongs to' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -l json -d 'Print data as JSON'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "check" -d 'Say whether a principal may reach a tool, prompt or resource, and which rule decides'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand policy; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "serve" -d 'Run the gateway'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "cert" -d 'Make a test PKI, or rotate the running gateway\'s certificate'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "status" -d 'Show the running gateway\'s status (through the control socket)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "gateway" -d 'Manage upstream MCP servers (through the control socket)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "token" -d 'Bearer tokens for the gateway\'s HTTP listener'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "call" -d 'Send one MCP/JSON-RPC request and print its result: through the control socket, or as a real MCP client of --url'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "connect" -d 'Be a stdio MCP server that relays to a remote MCP endpoint over Streamable HTTP (what a desktop client\'s config runs as a command)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "probe" -d 'Check an upstream MCP endpoint phase by phase (DNS, TCP, TLS, HTTP, MCP, tools/list)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "policy" -d 'Explain what the policy of a config file decides'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status gateway token call connect probe policy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "gen" -d 'Write a test PKI: ca.crt ca.key server.crt server.key client.crt client.key'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "rotate" -d 'Install a new serving certificate in the running gateway without dropping a connection'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "add" -d 'Register an upstream: connect, initialize, list its catalog, store it'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "list" -d 'List registered upstreams with their health'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "show" -d 'Show one upstream: TLS identity, health, protocol, tools, warnings'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from gateway" -f -a "remove" -d 'Remove an upstream'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from token" -f -a "create" -d 'Print a bearer token (HS256 JWT) that the gateway using this data dir accepts'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from policy" -f -a "check" -d 'Say whether a principal may reach a tool, prompt or resource, and which rule decides'
