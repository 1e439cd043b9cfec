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
complete -c mcpgw -n "__fish_mcpgw_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l config -d 'Config file (TOML)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l listen -d 'Address to listen on [default: 127.0.0.1:4444]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-cert -d 'Serving certificate chain (PEM); enables HTTPS' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-key -d 'Private key of the serving certificate (PEM)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l tls-ca -d 'CA that must have issued the serving certificate; a reload to a certificate it did not issue is refused' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l client-ca -d 'CA bundle for client certificates: clients must present one it issued (downstream mTLS)' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l log-format -d 'Log format [default: text]' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l shutdown-grace -d 'Seconds that in-flight requests get to finish on SIGTERM/SIGINT [default: 30]' -r
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l allow-insecure-bind -d 'Allow listening on a non-loopback address without TLS'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand serve" -l no-auth -d 'Turn bearer auth off (refused unless the listen address is loopback)'
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
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l control-socket -d 'The gateway\'s control socket [default: <data-dir>/mcpgw.sock]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l data-dir -d 'Directory for the gateway\'s state (store, secrets, control socket) [default: ./.mcpgw]' -r -F
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l issue -d 'Mint a new server certificate from a CA'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand cert; and __fish_seen_subcommand_from rotate" -l no-verify-handshake -d 'Skip the confirming TLS handshake against the listener'
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
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status help" -f -a "serve" -d 'Run the gateway'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status help" -f -a "cert" -d 'Make a test PKI, or rotate the running gateway\'s certificate'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status help" -f -a "status" -d 'Show the running gateway\'s status (through the control socket)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and not __fish_seen_subcommand_from serve cert status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "gen" -d 'Write a test PKI: ca.crt ca.key server.crt server.key client.crt client.key'
complete -c mcpgw -n "__fish_mcpgw_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "rotate" -d 'Install a new serving certificate in the running gateway without dropping a connection'
