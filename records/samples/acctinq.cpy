      *****************************************************************
      * ACCTINQ: the account inquiry server class's records.
      * The request names an account. The reply is the account
      * (status "00") or an error (any other status), told apart by
      * REPLY-STATUS.
      *****************************************************************
       01  ACCTINQ-REQUEST.
           05  REQUEST-CODE            PIC X(4)  VALUE "INQ1".
           05  ACCOUNT-NO              PIC 9(10).
           05  BRANCH                  PIC X(6)  VALUE SPACES.
           05  MAX-TXNS                PIC S9(4) COMP VALUE 10.
       01  ACCTINQ-REPLY.
           05  REPLY-STATUS            PIC XX.
               88  REPLY-OK            VALUE "00".
           05  ACCOUNT-NO              PIC 9(10).
           05  HOLDER-NAME             PIC X(30).
           05  BALANCE                 PIC S9(11)V99 COMP-3.
           05  OPENED.
               10  OPENED-YEAR         PIC 9(4).
               10  OPENED-MONTH        PIC 99.
               10  OPENED-DAY          PIC 99.
           05  FILLER                  PIC X(2).
           05  TXN-COUNT               PIC S9(4) COMP.
           05  TXN OCCURS 0 TO 10 TIMES
                   DEPENDING ON TXN-COUNT.
               10  TXN-DATE            PIC 9(8).
               10  TXN-AMOUNT          PIC S9(7)V99
                                       SIGN LEADING SEPARATE.
       01  ACCTINQ-ERROR REDEFINES ACCTINQ-REPLY.
           05  ERROR-STATUS            PIC XX.
           05  ERROR-TEXT              PIC X(60).
