"""``spendstream run`` on Kafka (confluent-kafka, through ``spendstream.kafka``).

    topology        the topics, their keys and partition counts
    wire            the partials topic's records and the reset control records
    partition_loop  what both loops share: resume from the writer's commit, rewind on failure
    usage_loop      usage partitions: decode, price, per-key detection, partials, land
    scope_loop      partials partitions: aligned rounds of wide-scope merges, land
    facts_reader    the facts topic read back (DetailSource; unlanded batches' cuts)
    outputs         alerts, signed breaker events, dead letters (breakers' idle advance:
                    spendstream/runtime/idle_clock.py)
    worker          one process: both loops and the HTTP server
    breaker_control ``spendstream breakers``: states and manual resets

docs/kafka.md describes the topology and its guarantees.
"""
