from cutor_spool.cli import main

main()
