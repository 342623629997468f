from kbindex.cli import main

main()
